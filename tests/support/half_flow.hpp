// A flow half written on a Redis Cluster, as a jobqctl stopped between its steps leaves it
// (docs/workflows.md, "Flows across slots"): written with the store's own calls.
#pragma once

#include <chrono>
#include <stdexcept>
#include <string>

#include "job/job.hpp"
#include "redis/sync_client.hpp"
#include "store/after.hpp"
#include "store/call.hpp"
#include "store/calls.hpp"

namespace jq::test {

/// Flow `fid`'s record begun in queue `home`'s slot with `lease`; job x of queue `b` waiting for
/// the flow's gate alone, job y of queue `c` waiting for b/x (policy `policy`) and the gate; with
/// `told`, x's slot knows y waits on it. Never the last step. Throws when a step fails.
inline void write_half_flow(const std::string& url, const std::string& fid, const std::string& home,
                            const std::string& b, const std::string& c,
                            std::chrono::milliseconds lease, job::DependencyPolicy policy,
                            bool told) {
  auto w = redis::SyncClient::connect(redis::parse_url(url)).value();
  if (store::run(w, store::flow_step(store::Keys("jobq", home), store::FlowStep::begin, fid,
                                     b + "/x\n" + c + "/y\n", lease))
          .value() != 1) {
    throw std::runtime_error("flow " + fid + " begun already");
  }
  job::Job x;
  x.id = "x";
  x.raw = R"({"id": "x", "payload": 1})";
  job::Job y;
  y.id = "y";
  y.raw = R"({"id": "y", "payload": 2, "after": [")" + b + R"(/x"]})";
  y.after = {{b, "x"}};
  y.on_dependency_failure = policy;
  const auto now = store::run(w, store::redis_time()).value();
  auto wx = store::waiting_of(x, b, now);
  auto wy = store::waiting_of(y, c, now);
  wx.flow = wy.flow = fid;
  if (!store::run(w, store::after_wait(store::Keys("jobq", b), wx)).value() ||
      !store::run(w, store::after_wait(store::Keys("jobq", c), wy)).value()) {
    throw std::runtime_error("flow " + fid + ": x or y is taken");
  }
  if (told) {
    store::run(w, store::after_register(store::Keys("jobq", b), b, c + "/y", {"x"})).value();
    store::run(w, store::after_registered(store::Keys("jobq", c), "y")).value();
  }
}

}  // namespace jq::test
