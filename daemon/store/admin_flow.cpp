// store::Admin::flow: the graph around a job (jobqctl flow, GET /api/jobs/ID/flow), read from what
// the protocol keeps (docs/workflows.md): each job's state `after` (what it waited for, kept after
// it ran) upward, and its queue's dependents note (what waits on it, until it is final) downward,
// a level at a time. And flow_json, the graph as data for both of them.
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/admin.hpp"
#include "store/admin_calls.hpp"
#include "store/calls.hpp"

namespace jq::store {
namespace {

using admin_calls::call_all;

// The jobs waiting on job `id` as its slot notes them (QUEUE/ID, one a line; "" when none).
Call<std::string> dependents_note(const Keys& k, const std::string& id) {
  return Call<std::string>{Request{nullptr, {}, {"HGET", k.dependents, id}},
                           [](redis::Reply r) -> OpResult<std::string> {
                             if (r.is_nil()) return std::string();
                             if (r.type != redis::Reply::Type::string)
                               return redis::shape_error("a dependents note", r);
                             return std::move(r.str);
                           }};
}

// The words of `text` split at `sep`, empty ones left out.
std::vector<std::string> split(std::string_view text, char sep) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const auto at = text.find(sep);
    const auto word = text.substr(0, at);
    if (!word.empty()) out.emplace_back(word);
    if (at == std::string_view::npos) break;
    text.remove_prefix(at + 1);
  }
  return out;
}

using json = nlohmann::json;
using Edges = std::vector<std::string> FlowNode::*;

std::string field(const FlowNode& n, const char* name) {
  const auto it = n.state.find(name);
  return it == n.state.end() ? "" : it->second;
}

// A job as data (flow_json): job, queue, status (null: not seen yet), times as numbers (those it
// has), error and error_kind (failed, cancelled), waiting_for and waits_for_total (waiting), and
// its tree along `edges` under `key`; a job shown before is {job, queue, status, "above": true},
// one not read (the bounds) {job, queue, "cut": true}.
class JsonTree {
 public:
  explicit JsonTree(const FlowGraph& g) : g_(g) {}

  json node(const std::string& ref, Edges edges, const char* key) {
    const auto it = g_.nodes.find(ref);
    if (it == g_.nodes.end()) {
      const auto slash = ref.rfind('/');
      return {{"job", ref.substr(slash + 1)},
              {"queue", slash == std::string::npos ? "" : ref.substr(0, slash)},
              {"cut", true}};
    }
    const FlowNode& n = it->second;
    json j = {{"job", n.id}, {"queue", n.queue}};
    j["status"] = n.status.empty() ? json(nullptr) : json(n.status);
    if (n.status.empty()) return j;
    if (!shown_.insert(ref).second) {
      j["above"] = true;
      return j;
    }
    for (const char* t : {"submitted_at", "started_at", "finished_at"}) {
      if (const auto v = whole_number(field(n, t))) j[t] = *v;
    }
    if (n.status == "failed" || n.status == "cancelled") {
      j["error"] = field(n, "error");
      j["error_kind"] = field(n, "error_kind");
    }
    if (n.status == "waiting") {
      j["waiting_for"] = whole_number(field(n, "waiting_for")).value_or(0);
      j["waits_for_total"] = n.after.size();
      // A job of a flow being written on a cluster: held until the whole flow is.
      if (const std::string flow = field(n, "flow"); !flow.empty()) j["flow"] = flow;
    }
    if (key) j[key] = children(n.*edges, edges, key);
    return j;
  }
  json children(const std::vector<std::string>& refs, Edges edges, const char* key) {
    json out = json::array();
    for (const auto& r : refs) out.push_back(node(r, edges, key));
    return out;
  }
  json root() {
    json j = node(g_.root, &FlowNode::after, nullptr);
    const FlowNode& n = g_.nodes.at(g_.root);
    j["after"] = children(n.after, &FlowNode::after, "after");
    j["dependents"] = children(n.dependents, &FlowNode::dependents, "dependents");
    // A failed job kept with the dead ones keeps its note (what failed because of it).
    j["dependents_known"] = !is_final(n.status) || !n.dependents.empty();
    j["cut"] = g_.cut;
    j["limits"] = {{"jobs", g_.max_jobs}, {"depth", g_.max_depth}};
    return j;
  }

 private:
  const FlowGraph& g_;
  std::set<std::string> shown_;
};

}  // namespace

json flow_json(const FlowGraph& g) {
  return JsonTree(g).root();
}

FlowGraph Admin::flow(const std::string& queue, const std::string& id, std::size_t max_jobs,
                      std::size_t max_depth) {
  FlowGraph g;
  g.root = queue + "/" + id;
  g.max_jobs = max_jobs;
  g.max_depth = max_depth;

  // Reads the jobs of `refs` (QUEUE/ID each, none read before) into g.nodes: their states, claims
  // and dependents notes, each kind in one round trip; then, for those a claim names, whether a
  // daemon holds them. A reference that names no job jobqd could have is a node not seen.
  auto read = [&](const std::vector<std::string>& refs) {
    std::vector<Keys> keys;
    std::vector<FlowNode*> nodes;
    std::vector<Call<State>> states;
    std::vector<Call<std::string>> claims, notes;
    for (const auto& ref : refs) {
      const auto slash = ref.rfind('/');
      FlowNode& n = g.nodes[ref];
      n.queue = slash == std::string::npos ? "" : ref.substr(0, slash);
      n.id = slash == std::string::npos ? ref : ref.substr(slash + 1);
      try {
        check_queue(n.queue);
        check_id(n.id);
      } catch (const AdminError&) {
        continue;  // not a reference jobqd writes: shown as not seen
      }
      keys.push_back(home_keys(n.queue, n.id));
      nodes.push_back(&n);
      states.push_back(read_state(keys.back(), n.id));
      claims.push_back(read_claim(keys.back(), n.id));
      notes.push_back(dependents_note(keys.back(), n.id));
    }
    if (nodes.empty()) return;
    const auto state = call_all(c_, states);
    const auto claim = call_all(c_, claims);
    const auto note = call_all(c_, notes);
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      FlowNode& n = *nodes[i];
      n.state = state[i];
      const auto s = n.state.find("status");
      n.status = shown_status(keys[i], s == n.state.end() ? "" : s->second, claim[i]);
      if (const auto a = n.state.find("after"); a != n.state.end()) n.after = split(a->second, ' ');
      n.dependents = split(note[i], '\n');
    }
  };

  // One direction, a level at a time: the references of the level's jobs not read yet (each once),
  // as many as the bound on jobs leaves room for.
  auto walk = [&](std::vector<std::string> FlowNode::*edges) {
    std::vector<std::string> level{g.root};
    for (std::size_t depth = 0; !level.empty(); ++depth) {
      std::vector<std::string> next;
      std::set<std::string> named;
      for (const auto& ref : level) {
        for (const auto& to : g.nodes.at(ref).*edges) {
          if (g.nodes.count(to) || !named.insert(to).second) continue;
          if (depth >= max_depth || g.nodes.size() + next.size() >= max_jobs) {
            g.cut = true;
            continue;
          }
          next.push_back(to);
        }
      }
      read(next);
      level = std::move(next);
    }
  };
  read({g.root});
  walk(&FlowNode::after);
  walk(&FlowNode::dependents);
  return g;
}

RetryFlow Admin::retry_with_dependents(const std::string& queue, const std::string& id,
                                       std::size_t max_jobs) {
  // What goes back is read first, then sent back, the job first: a job sent back may run and end
  // at once, and its end takes the note of what waited on it.
  const std::string root = queue + "/" + id;
  std::vector<std::string> plan{root};
  RetryFlow out;
  // Down the notes a level at a time: each job noted as waiting on one in the plan that failed
  // because of it (its error names it) goes back too, from its own queue's dead ones, once.
  std::set<std::string> seen{root};
  std::vector<std::string> level{root};
  while (!level.empty()) {
    std::vector<Call<std::string>> notes;
    for (const auto& ref : level) {
      const auto slash = ref.rfind('/');
      notes.push_back(dependents_note(home_keys(ref.substr(0, slash), ref.substr(slash + 1)),
                                      ref.substr(slash + 1)));
    }
    const auto noted = call_all(c_, notes);
    // The jobs they note, each once, with the one it waited on; their states in one round trip.
    std::vector<std::pair<std::string, const std::string*>> named;  // QUEUE/ID, waited on
    std::vector<Call<State>> states;
    for (std::size_t i = 0; i < level.size(); ++i) {
      for (auto& d : split(noted[i], '\n')) {
        const auto slash = d.rfind('/');
        if (slash == std::string::npos || !seen.insert(d).second) continue;
        const std::string dq = d.substr(0, slash), did = d.substr(slash + 1);
        try {
          check_queue(dq);
          check_id(did);
        } catch (const AdminError&) {
          continue;  // not a reference jobqd writes
        }
        states.push_back(read_state(home_keys(dq, did), did));
        named.emplace_back(std::move(d), &level[i]);
      }
    }
    const auto state = call_all(c_, states);
    std::vector<std::string> next;
    for (std::size_t k = 0; k < named.size(); ++k) {
      const auto& [d, on] = named[k];
      auto field = [&](const char* f) {
        const auto it = state[k].find(f);
        return it == state[k].end() ? std::string() : it->second;
      };
      if (field("status") != "failed" || field("error_kind") != "dependency" ||
          !field("error").starts_with("dependency " + *on + " ")) {
        continue;  // not failed because of it (ran, waits, or another dependency failed it)
      }
      if (plan.size() >= max_jobs) {
        out.left.push_back(d + ": past the bound of " + std::to_string(max_jobs) + " jobs");
        continue;
      }
      plan.push_back(d);
      next.push_back(d);
    }
    level = std::move(next);
  }
  retry_dead(queue, {id}, false);  // not_found when it is not among the dead
  out.retried.push_back(root);
  for (std::size_t k = 1; k < plan.size(); ++k) {
    const auto slash = plan[k].rfind('/');
    try {
      retry_dead(plan[k].substr(0, slash), {plan[k].substr(slash + 1)}, false);
    } catch (const AdminError& e) {
      if (e.kind != AdminError::Kind::not_found) throw;
      out.left.push_back(plan[k] + ": no longer kept among the dead (keep_failed)");
      continue;
    }
    out.retried.push_back(plan[k]);
  }
  return out;
}

}  // namespace jq::store
