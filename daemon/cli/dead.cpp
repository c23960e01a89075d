// jobqctl dead list, retry and purge: a queue's dead jobs as store::Admin lists, requeues or drops
// them (in slices), printed.
#include <iostream>

#include "cli/commands.hpp"
#include "job/text.hpp"

namespace jq::cli {

int cmd_dead(const Globals& g, const std::string& action, const std::string& queue_given,
             const std::string& id, bool all, std::size_t limit, bool with_dependents) {
  const std::string& queue = queue_arg(queue_given);
  Target t = resolve(g);
  auto c = connect(t);
  auto admin = admin_for(c, t);
  // The queue's layout first: garbage there is said before anything about the arguments.
  admin.shard_count(queue);
  if (action == "list") {
    // Dead jobs are kept per shard: the list merges them, oldest first.
    const store::JobPage page = admin.list(queue, "dead", 0, limit, false);
    const std::int64_t now = call(c, store::redis_time());
    json out = json::array();
    Table table({"ID", "DIED", "ERROR_KIND", "ERROR"});
    std::size_t shown = 0;
    for (const auto& dead : page.jobs) {
      store::State h = dead.state;
      if (h["status"] != "failed") continue;  // a newer job of that id has its state now
      ++shown;
      if (g.json_out) {
        out.push_back(state_json(dead.id, h));
        continue;
      }
      table.add({dead.id, when(h["finished_at"], now), h["error_kind"],
                 job::to_utf8(job::clip_utf8(h["error"], 100))});
    }
    if (g.json_out) {
      std::cout << dump(out) << "\n";
    } else if (shown == 0) {
      std::cout << "no dead jobs in queue " << queue << "\n";
    } else {
      table.print(std::cout);
      if (page.total > limit) {
        std::cout << "(" << limit << " of " << page.total << "; --limit N for more)\n";
      }
    }
    return kOk;
  }
  if (id.empty() == !all) throw Exit{kUsage, "dead " + action + ": give one ID or --all"};
  if (!all) id_arg(id);
  if (with_dependents) {
    if (action != "retry" || all) {
      throw Exit{kUsage, "--with-dependents goes with dead retry QUEUE ID (one job)"};
    }
    // The job, then what failed because of it, down the graph (docs/workflows.md).
    const store::RetryFlow r = admin.retry_with_dependents(queue, id);
    if (g.json_out) {
      std::cout << json({{"requeued", r.retried}, {"left", r.left}}).dump() << "\n";
      return kOk;
    }
    std::cout << "requeued " << r.retried.size() << " job(s): " << joined(r.retried) << "\n";
    for (const auto& l : r.left) std::cout << "not requeued: " << l << "\n";
    return r.left.empty() ? kOk : kFailure;
  }
  std::vector<std::string> ids;
  if (!all) ids.push_back(id);
  const long long done =
      action == "retry" ? admin.retry_dead(queue, ids, all) : admin.purge_dead(queue, ids, all);
  if (g.json_out) {
    std::cout << json({{action == "retry" ? "requeued" : "purged", done}}).dump() << "\n";
  } else {
    std::cout << (action == "retry" ? "requeued " : "purged ") << done << " job(s)\n";
  }
  return kOk;
}

}  // namespace jq::cli
