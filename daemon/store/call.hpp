// A typed call of the protocol: what to send (a script or a command) and how to read its answer,
// run by the daemon on its async client and by jobqctl on its blocking one, through the same code.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "async/async.hpp"
#include "redis/client.hpp"
#include "redis/op_result.hpp"
#include "redis/script.hpp"
#include "redis/sync_client.hpp"

namespace jq::store {

using redis::OpError;
using redis::OpResult;

/// What goes to Redis: a script with its keys and arguments, or (script null) a plain command,
/// `args` being the whole of it.
struct Request {
  const redis::Script* script = nullptr;
  std::vector<std::string> keys;
  std::vector<std::string> args;
};

/// A call: a Request and the function that reads its reply into a T (an OpError of kind shape
/// for a reply of another shape). Calls are built by the functions of store/calls.hpp.
template <class T>
struct Call {
  using Result = T;
  Request req;
  std::function<OpResult<T>(redis::Reply)> decode;
};

/// A request on the daemon's client: the reply, or why there is none.
async::Task<OpResult<redis::Reply>> send(redis::Client& client, const Request& req);

/// Runs a call on the daemon's client. `call` must outlive the await (a named local).
template <class T>
async::Task<OpResult<T>> run(redis::Client& client, const Call<T>& call) {
  OpResult<redis::Reply> r = co_await send(client, call.req);
  if (!r.ok()) co_return r.error();
  co_return call.decode(std::move(*r));
}

/// Pipelines a request on a blocking client (jobqctl): read its reply with client.read(), in
/// order. A script goes by EVALSHA: load() it first.
void append(redis::SyncClient& client, const Request& req);

/// Runs a call on a blocking client (jobqctl).
template <class T>
OpResult<T> run(redis::SyncClient& client, const Call<T>& call) {
  OpResult<redis::Reply> r = call.req.script
                                 ? client.run(*call.req.script, call.req.keys, call.req.args)
                                 : client.call(call.req.args);
  if (!r.ok()) return r.error();
  return call.decode(std::move(*r));
}

/// Sends `calls` in one write on a blocking client and reads their replies in order (one round
/// trip however many shards they go to). A script among them must have been loaded
/// (SyncClient::load) first: pipelined, it goes by EVALSHA alone.
template <class T>
std::vector<OpResult<T>> pipelined(redis::SyncClient& client, const std::vector<Call<T>>& calls) {
  for (const auto& x : calls) append(client, x.req);
  std::vector<OpResult<T>> out;
  out.reserve(calls.size());
  // Every reply is read, an error or not: the connection stays in step.
  for (const auto& x : calls) {
    auto r = client.read();
    out.push_back(r.ok() ? x.decode(std::move(*r)) : OpResult<T>(r.error()));
  }
  return out;
}

}  // namespace jq::store
