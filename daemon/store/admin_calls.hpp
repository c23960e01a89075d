// How store::Admin's implementation files run calls: a value, or AdminError saying what a failed
// call means to the operator (store/admin.cpp, store/admin_after.cpp).
#pragma once

#include <utility>
#include <vector>

#include "store/admin.hpp"
#include "store/call.hpp"

namespace jq::store::admin_calls {

/// What a failed call means to the operator: Redis away or refusing, or a key of jobqd's holding
/// what jobqd never writes (a wrong type, or a value it cannot read).
inline AdminError::Kind kind_of(const OpError& e) {
  if (e.kind == OpError::Kind::shape || e.wrong_type()) return AdminError::Kind::garbage;
  return AdminError::Kind::redis;
}

/// The value of a call, or AdminError with its error.
template <class T>
T must(OpResult<T> r) {
  if (!r.ok()) throw AdminError(kind_of(r.error()), r.error().message);
  return std::move(*r);
}

template <class T>
T call(redis::SyncClient& c, const Call<T>& x) {
  return must(run(c, x));
}

/// The values of `calls` (calls of one kind), in one round trip; or AdminError with the first
/// error. A single call runs alone: nothing to load.
template <class T>
std::vector<T> call_all(redis::SyncClient& c, const std::vector<Call<T>>& calls) {
  std::vector<T> out;
  if (calls.size() == 1) {
    out.push_back(call(c, calls.front()));
    return out;
  }
  if (!calls.empty() && calls.front().req.script) must(c.load(*calls.front().req.script));
  for (auto& r : pipelined(c, calls)) out.push_back(must(std::move(r)));
  return out;
}

}  // namespace jq::store::admin_calls
