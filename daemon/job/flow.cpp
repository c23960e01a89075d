// Flow files: each job parsed by its queue's rules, then the graph checked (ids given twice,
// cycles) and ordered so that a job is written after what it waits for in the file.
#include "job/flow.hpp"

#include <map>
#include <set>

#include "config/names.hpp"
#include "job/text.hpp"

namespace jq::job {
namespace {

// A short, valid UTF-8 quote of a submitter's string.
std::string quote_of(std::string_view s) {
  return "'" + to_utf8(clip_utf8(s, 60)) + "'";
}

}  // namespace

std::variant<Flow, std::string> read_flow(std::string_view text, const std::string& queue,
                                          const RulesFor& rules_for) {
  auto parsed = parse_json(text);
  if (auto* why = std::get_if<std::string>(&parsed)) return "the flow file is not JSON: " + *why;
  const auto& doc = std::get<nlohmann::json>(parsed);
  if (!doc.is_array()) {
    return std::string("a flow file is a JSON list of jobs, got ") +
           (doc.is_object() ? "an object" : "another value");
  }
  if (doc.empty()) return std::string("the flow file lists no jobs");
  if (doc.size() > kMaxFlowJobs) {
    return "the flow file lists " + std::to_string(doc.size()) + " jobs, over the most one flow " +
           "may hold (" + std::to_string(kMaxFlowJobs) + ")";
  }
  // The name a job goes by in messages: its id in the flow's queue, QUEUE/ID in another.
  auto name_of = [&](const std::string& q, const std::string& id) {
    return q == queue ? id : q + "/" + id;
  };
  std::vector<FlowJob> jobs;
  jobs.reserve(doc.size());
  std::map<std::string, std::size_t> at;  // QUEUE/ID -> its place in the file
  for (std::size_t i = 0; i < doc.size(); ++i) {
    const auto& v = doc[i];
    const std::string where = "job " + std::to_string(i + 1) + " of the flow";
    if (!v.is_object()) return where + ": a job must be a JSON object with a payload field";
    std::string q = queue;
    if (auto it = v.find("queue"); it != v.end() && !it->is_null()) {
      if (!it->is_string() || !config::valid_name(it->get_ref<const std::string&>())) {
        return where + ": field queue must be a queue name (1-64 characters of A-Z a-z 0-9 _ . -)";
      }
      q = it->get<std::string>();
    }
    const Rules* base = rules_for(q);
    if (!base) return where + ": queue " + quote_of(q) + " is not one this flow may name";
    auto id = v.find("id");
    if (id == v.end() || !id->is_string()) {
      return where + ": a job of a flow needs its own id (others name it in their after)";
    }
    Rules rules = *base;
    rules.queue = q;
    rules.holds_dependencies = true;
    auto job = parse(v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), rules);
    if (auto* bad = std::get_if<Invalid>(&job)) {
      return where + " (id " + quote_of(id->get_ref<const std::string&>()) + "): " + bad->error;
    }
    FlowJob f{q, std::move(std::get<Job>(job))};
    for (auto& d : f.job.after) {
      if (d.queue.empty()) d.queue = q;
    }
    const auto [prev, fresh] = at.emplace(q + "/" + f.job.id, i);
    if (!fresh) {
      return "job " + quote_of(name_of(q, f.job.id)) + " is given twice in the flow: jobs " +
             std::to_string(prev->second + 1) + " and " + std::to_string(i + 1);
    }
    jobs.push_back(std::move(f));
  }

  // The graph within the file: each job's dependencies there, and who waits on each.
  const std::size_t n = jobs.size();
  std::vector<std::vector<std::size_t>> deps(n), dependents(n);
  std::vector<std::size_t> left(n, 0);
  std::set<std::string> outside_seen;
  Flow flow;
  for (std::size_t i = 0; i < n; ++i) {
    for (const auto& d : jobs[i].job.after) {
      auto it = at.find(d.ref());
      if (it == at.end()) {
        if (outside_seen.insert(d.ref()).second) flow.outside.push_back(d);
        continue;
      }
      deps[i].push_back(it->second);
      dependents[it->second].push_back(i);
      ++left[i];
    }
  }
  // Kahn's order: a job once all it waits for in the file is placed, in the file's order.
  std::vector<std::size_t> order;
  order.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (left[i] == 0) order.push_back(i);
  }
  for (std::size_t k = 0; k < order.size(); ++k) {
    for (std::size_t w : dependents[order[k]]) {
      if (--left[w] == 0) order.push_back(w);
    }
  }
  if (order.size() < n) {
    // Every job not placed waits for another not placed: following those leads round a cycle.
    std::size_t start = 0;
    while (left[start] == 0) ++start;
    std::vector<std::size_t> path;
    std::vector<std::size_t> on_path(n, 0);  // its place in path + 1; 0: not on it
    std::size_t cur = start;
    while (on_path[cur] == 0) {
      path.push_back(cur);
      on_path[cur] = path.size();
      for (std::size_t d : deps[cur]) {
        if (left[d] != 0) {
          cur = d;
          break;
        }
      }
    }
    // A long cycle is named by its ends (the message goes to a terminal, not a file).
    const std::size_t from = on_path[cur] - 1, len = path.size() - from;
    std::string cycle;
    for (std::size_t k = 0; k < len; ++k) {
      if (len > 12 && k == 6) {
        cycle += "... (" + std::to_string(len - 12) + " more) -> ";
        k = len - 6;
      }
      const auto& j = jobs[path[from + k]];
      cycle += name_of(j.queue, j.job.id) + " -> ";
    }
    cycle += name_of(jobs[cur].queue, jobs[cur].job.id);
    return "the flow has a cycle (each waits for the next): " + cycle;
  }
  flow.jobs.reserve(n);
  for (std::size_t i : order) flow.jobs.push_back(std::move(jobs[i]));
  return flow;
}

}  // namespace jq::job
