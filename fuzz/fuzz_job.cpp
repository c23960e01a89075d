// Fuzzes the job format (job::parse, payload_text) and the text helpers it relies on (parse_json,
// to_utf8).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <set>
#include <string>
#include <string_view>

#include "fuzz/finding.hpp"
#include "job/id.hpp"
#include "job/job.hpp"
#include "job/text.hpp"

using jq::fuzz::finding;
namespace job = jq::job;

namespace {

const std::set<std::string> kHandlers = {"default", "hook"};

void check_parse(std::string_view text) {
  const job::Rules rules{"default", &kHandlers, 1024 * 1024, {}, "q", false};
  auto parsed = job::parse(text, rules);
  if (auto* bad = std::get_if<job::Invalid>(&parsed)) {
    // The error goes into Redis and into JSON events: never empty, always valid UTF-8.
    if (bad->error.empty()) finding("parse: an Invalid without an error");
    if (!job::is_utf8(bad->error)) finding("parse: an error that is not UTF-8", bad->error);
    if (!bad->id.empty() && !job::valid_id(bad->id)) finding("parse: an invalid id", bad->id);
    return;
  }
  const job::Job& j = std::get<job::Job>(parsed);
  if (!job::valid_id(j.id)) finding("parse: a job with an invalid id", j.id);
  if (j.handler != "default" && !kHandlers.count(j.handler)) finding("parse: handler", j.handler);
  std::string payload = j.payload.dump();  // throws on invalid UTF-8: caught below as a finding
  // Every later copy (a retry, a recovered job) is parsed again from raw: it must be the same
  // job with the same id, and never get another id.
  auto again = job::parse(j.raw, rules);
  if (auto* bad = std::get_if<job::Invalid>(&again)) {
    finding("parse: job.raw does not parse again", bad->error + "\nraw: " + j.raw);
  }
  const job::Job& k = std::get<job::Job>(again);
  if (k.id != j.id) finding("parse: job.raw parses to another id", j.id + " vs " + k.id);
  if (k.id_assigned) finding("parse: job.raw has no id of its own", j.raw);
  if (k.raw != j.raw) finding("parse: raw changed on a re-parse", j.raw + "\nvs " + k.raw);
  if (k.handler != j.handler || k.timeout_ms != j.timeout_ms || k.max_attempts != j.max_attempts ||
      k.payload.dump() != payload) {
    finding("parse: job.raw parses to a different job", j.raw);
  }
  // What a state keeps of it (retain.payload): where the scan finds a payload, it is the job's.
  // The priority a due retry is promoted by is read from the text alone: the same as the parse.
  if (job::priority_of_text(j.raw) != j.priority) {
    finding("priority_of_text: not the job's priority", j.raw);
  }
  if (const auto text = job::payload_text(j.raw)) {
    auto back = job::parse_json(*text);
    if (!std::holds_alternative<nlohmann::json>(back) ||
        std::get<nlohmann::json>(back) != j.payload) {
      finding("payload_text: not the job's payload", std::string(*text) + "\nraw: " + j.raw);
    }
  }
}

// `after` as the job parser reads it (a job that has one is refused until the protocol lands:
// docs/workflows.md): an error is UTF-8; what it accepts is a list of distinct, valid references
// that name neither the job itself nor its own queue by name.
void check_dependencies(std::string_view text) {
  auto parsed = job::parse_json(text);
  auto* doc = std::get_if<nlohmann::json>(&parsed);
  if (!doc || !doc->is_object()) return;
  const job::Rules rules{"default", &kHandlers, 1024 * 1024, {}, "q", false};
  job::Job j;
  if (auto e = job::read_dependencies(*doc, rules, "me", j)) {
    if (e->empty() || !job::is_utf8(*e)) finding("read_dependencies: a bad error", *e);
    return;
  }
  if (j.after.size() > job::kMaxDependencies) finding("read_dependencies: over the bound");
  std::set<std::string> refs;
  for (const auto& d : j.after) {
    std::string error;
    auto back = job::dependency_of(d.ref(), error);
    if (!back || !(*back == d))
      finding("read_dependencies: a reference that reads otherwise", d.ref());
    if (d.queue == "q" || (d.queue.empty() && d.id == "me")) finding("read_dependencies", d.ref());
    if (!refs.insert(d.ref()).second) finding("read_dependencies: twice", d.ref());
  }
}

void check_text(std::string_view text) {
  auto parsed = job::parse_json(text);
  if (auto* why = std::get_if<std::string>(&parsed)) {
    if (!job::is_utf8(*why)) finding("parse_json: an error that is not UTF-8", *why);
  } else {
    if (job::nesting_over(text)) finding("parse_json: accepted a document nested too deep");
    const auto& doc = std::get<nlohmann::json>(parsed);
    std::string out = doc.dump();
    auto back = job::parse_json(out);
    if (!std::holds_alternative<nlohmann::json>(back) || std::get<nlohmann::json>(back) != doc) {
      finding("parse_json: dump() does not parse back to the same document", out);
    }
  }

  std::string fixed = job::to_utf8(std::string(text));
  if (!job::is_utf8(fixed)) finding("to_utf8: the result is not UTF-8", fixed);
  if (job::is_utf8(text) && fixed != text) finding("to_utf8: changed valid UTF-8");

  // Any text at all (a copy in Redis may be garbage): a part of it, or none.
  if (const auto p = job::payload_text(text)) {
    if (p->data() < text.data() || p->data() + p->size() > text.data() + text.size())
      finding("payload_text: a view outside its text");
  }

  const std::size_t n = text.empty() ? 0 : static_cast<unsigned char>(text[0]);
  std::string clipped = job::clip_utf8(text, n);
  if (clipped.size() > n + 3) finding("clip_utf8: longer than asked", clipped);
  if (job::is_utf8(text) && !job::is_utf8(clipped)) finding("clip_utf8: split a character");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (auto check : {check_parse, check_text, check_dependencies}) {
    try {
      check(text);
    } catch (const std::exception& e) {
      finding("an exception escaped (parse and parse_json never throw)", e.what());
    }
  }
  return 0;
}
