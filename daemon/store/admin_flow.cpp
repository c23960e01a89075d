// store::Admin::flow: the graph around a job (jobqctl flow), read from what the protocol keeps
// (docs/workflows.md): each job's state `after` (what it waited for, kept after it ran) upward, and
// its queue's dependents note (what waits on it, until it is final) downward, a level at a time.
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

}  // namespace

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

}  // namespace jq::store
