// jobqctl dead list, retry and purge: a queue's dead jobs, requeued or dropped in slices.
#include <iostream>

#include "cli/commands.hpp"
#include "job/text.hpp"

namespace jq::cli {

int cmd_dead(const Globals& g, const std::string& action, const std::string& queue_given,
             const std::string& id, bool all, std::size_t limit) {
  const std::string& queue = queue_arg(queue_given);
  Target t = resolve(g);
  auto c = connect(t);
  // Dead jobs are kept per shard: a list merges them, retry and purge act in each.
  const auto shards = shard_keys(c, t, queue);
  if (action == "list") {
    const long long total = summed(c, shards, store::dead_count);
    const std::int64_t now = call(c, store::redis_time());
    json out = json::array();
    Table table({"ID", "DIED", "ERROR_KIND", "ERROR"});
    std::size_t shown = 0;
    for (const auto& dead : lowest(c, shards, store::dead_slice, limit)) {
      const std::string& dead_id = dead.member;
      // Its state in the shard it died in.
      auto h = call(c, store::read_state(shards[dead.shard], dead_id));
      if (h["status"] != "failed") continue;  // a newer job of that id has its state now
      ++shown;
      if (g.json_out) {
        out.push_back(state_json(dead_id, h));
        continue;
      }
      table.add({dead_id, when(h["finished_at"], now), h["error_kind"],
                 job::to_utf8(job::clip_utf8(h["error"], 100))});
    }
    if (g.json_out) {
      std::cout << dump(out) << "\n";
    } else if (shown == 0) {
      std::cout << "no dead jobs in queue " << queue << "\n";
    } else {
      table.print(std::cout);
      if (total > static_cast<long long>(limit)) {
        std::cout << "(" << limit << " of " << total << "; --limit N for more)\n";
      }
    }
    return kOk;
  }
  if (id.empty() == !all) throw Exit{kUsage, "dead " + action + ": give one ID or --all"};
  if (!all) id_arg(id);
  long long done = 0;
  for (const auto& k : shards) {
    // One ID: in every shard (the scripts leave a shard where it is not dead alone); a dead job
    // is usually at its id's home, but one jobqd could not read stays where it was fetched.
    std::vector<std::string> ids;
    if (all) {
      const long long total = call(c, store::dead_count(k));
      for (long long from = 0; from < total; from += 10000) {
        for (auto& [dead_id, score] : call(c, store::dead_slice(k, from, from + 9999))) {
          ids.push_back(std::move(dead_id));
        }
      }
    } else {
      ids.push_back(id);
    }
    // In slices, so that --all on a large dead set does not hold Redis in one long script.
    for (std::size_t i = 0; i < ids.size(); i += 500) {
      const std::vector<std::string> slice(
          ids.begin() + static_cast<long>(i),
          ids.begin() + static_cast<long>(std::min(ids.size(), i + 500)));
      done += action == "retry" ? call(c, store::requeue_dead(k, slice))
                                : call(c, store::drop_dead(k, slice));
    }
  }
  if (!all && done == 0) throw Exit{kFailure, "no dead job " + id + " in queue " + queue};
  if (g.json_out) {
    std::cout << json({{action == "retry" ? "requeued" : "purged", done}}).dump() << "\n";
  } else {
    std::cout << (action == "retry" ? "requeued " : "purged ") << done << " job(s)\n";
  }
  return kOk;
}

}  // namespace jq::cli
