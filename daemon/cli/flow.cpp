// jobqctl flow ID: the graph around a job (docs/workflows.md, "Flows") as two trees, what it waits
// for (recursively) and what waits on it that is still known, each job with its status and times.
// What it reads is store::Admin::flow; here it is printed, or given as data (--json:
// store::flow_json, which GET /api/jobs/ID/flow answers too).
#include <iostream>
#include <set>

#include "cli/commands.hpp"
#include "job/text.hpp"

namespace jq::cli {
namespace {

using Edges = std::vector<std::string> store::FlowNode::*;

std::string field(const store::FlowNode& n, const char* name) {
  const auto it = n.state.find(name);
  return it == n.state.end() ? "" : it->second;
}

// The error of a failed or cancelled job, on one line and at most 200 characters.
std::string error_line(const store::FlowNode& n) {
  std::string text = job::to_utf8(job::clip_utf8(field(n, "error"), 200));
  for (char& ch : text) {
    if (ch == '\n' || ch == '\r') ch = ' ';
  }
  const std::string kind = field(n, "error_kind");
  return "error" + (kind.empty() ? "" : " (" + kind + ")") + ": " + text;
}

bool ended_badly(const std::string& status) {
  return status == "failed" || status == "cancelled";
}

// "submitted 2026-12-07 19:00:00Z (5s ago), started 4s ago, finished 3s ago": the first as
// `status` prints times, the others relative to it.
std::string times_text(const store::FlowNode& n, std::int64_t now) {
  std::string out;
  const std::string submitted = field(n, "submitted_at");
  if (!submitted.empty()) out = "submitted " + when(submitted, now);
  for (const auto& [name, label] :
       {std::pair{"started_at", "started"}, {"finished_at", "finished"}}) {
    const auto v = whole_number(field(n, name));
    if (!v || *v <= 0) continue;
    out += (out.empty() ? "" : ", ") + std::string(label) + " " + relative(*v, now);
  }
  return out;
}

// What is said of a job under its line: its error, or what it waits for.
std::vector<std::string> details(const store::FlowNode& n) {
  std::vector<std::string> out;
  if (ended_badly(n.status)) out.push_back(error_line(n));
  if (n.status == "waiting") {
    out.push_back("waits for " + field(n, "waiting_for") + " of " + std::to_string(n.after.size()));
    // A job of a flow being written on a cluster: held until the whole flow is.
    if (const std::string flow = field(n, "flow"); !flow.empty()) {
      out.back() += ", and for its flow " + flow + " to be written whole";
    }
  }
  return out;
}

class TextTree {
 public:
  TextTree(const store::FlowGraph& g, std::int64_t now) : g_(g), now_(now) {}

  // A job's line: `QUEUE/ID  status  times`, then its details and its tree along `edges`.
  void node(const std::string& ref, Edges edges, const std::string& first,
            const std::string& rest) {
    const auto it = g_.nodes.find(ref);
    if (it == g_.nodes.end()) {
      std::cout << first << ref << "  (not read: the walk stops at " << g_.max_jobs << " jobs and "
                << g_.max_depth << " levels)\n";
      return;
    }
    const store::FlowNode& n = it->second;
    if (n.status.empty()) {
      std::cout << first << ref << "  not seen yet\n";
      return;
    }
    if (!shown_.insert(ref).second) {
      std::cout << first << ref << "  " << n.status << "  (above)\n";
      return;
    }
    const std::string times = times_text(n, now_);
    std::cout << first << ref << "  " << n.status << (times.empty() ? "" : "  " + times) << "\n";
    const auto& next = n.*edges;
    for (const auto& d : details(n)) std::cout << rest << (next.empty() ? "  " : "│ ") << d << "\n";
    children(next, edges, rest);
  }
  void children(const std::vector<std::string>& refs, Edges edges, const std::string& rest) {
    for (std::size_t i = 0; i < refs.size(); ++i) {
      const bool last = i + 1 == refs.size();
      node(refs[i], edges, rest + (last ? "└─ " : "├─ "), rest + (last ? "   " : "│  "));
    }
  }
  void root() {
    const store::FlowNode& n = g_.nodes.at(g_.root);
    shown_.insert(g_.root);
    const std::string times = times_text(n, now_);
    std::cout << g_.root << "  " << n.status << (times.empty() ? "" : "  " + times) << "\n";
    for (const auto& d : details(n)) std::cout << "  " << d << "\n";
    std::cout << "after (what it waits for):" << (n.after.empty() ? " none" : "") << "\n";
    children(n.after, &store::FlowNode::after, "");
    std::cout << "dependents (what waits on it):";
    if (!n.dependents.empty()) {
      std::cout << "\n";
      children(n.dependents, &store::FlowNode::dependents, "");
    } else if (store::is_final(n.status)) {
      std::cout << " not known once it is final (the note is gone)\n";
    } else {
      std::cout << " none\n";
    }
    if (g_.cut) {
      std::cout << "(cut: the walk stops at " << g_.max_jobs << " jobs and " << g_.max_depth
                << " levels each way)\n";
    }
  }

 private:
  const store::FlowGraph& g_;
  std::int64_t now_;
  std::set<std::string> shown_;
};

}  // namespace

int cmd_flow(const Globals& g, const std::string& id, const std::string& queue) {
  Target t = resolve(g);
  auto c = connect(t);
  auto admin = admin_for(c, t);
  const std::string q = admin.find_queue(id, queue);
  // Not found as `status` says it; then the graph, read at each job's home.
  if (!admin.job(q, id).exists()) throw Exit{kFailure, "no job " + id + " in queue " + q};
  const store::FlowGraph graph = admin.flow(q, id);
  if (graph.nodes.at(graph.root).status.empty()) {
    throw Exit{kFailure, "no job " + id + " in queue " + q};
  }
  if (g.json_out) {
    std::cout << dump(store::flow_json(graph)) << "\n";
    return kOk;
  }
  TextTree(graph, call(c, store::redis_time())).root();
  return kOk;
}

}  // namespace jq::cli
