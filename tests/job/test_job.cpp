// Job parsing and validation: every contract rule, with the message an operator reads.
#include <catch2/catch.hpp>

#include "job/id.hpp"
#include "job/job.hpp"
#include "job/text.hpp"

using namespace jq;

namespace {

const std::set<std::string> kHandlers{"noop", "echo"};

job::Rules rules(std::uint64_t max_bytes = 1000) {
  job::Rules r;
  r.default_handler = "noop";
  r.handlers = &kHandlers;
  r.max_bytes = max_bytes;
  return r;
}

std::string error_of(const std::string& raw, std::uint64_t max_bytes = 1000) {
  auto v = job::parse(raw, rules(max_bytes));
  auto* bad = std::get_if<job::Invalid>(&v);
  return bad ? bad->error : std::string("(valid)");
}

}  // namespace

TEST_CASE("a job needs only a payload; the rest defaults or is kept", "[job]") {
  auto v = job::parse(R"({"payload":{"a":1},"extra":[1,2]})", rules());
  REQUIRE(std::holds_alternative<job::Job>(v));
  const auto& j = std::get<job::Job>(v);
  CHECK(j.handler == "noop");
  CHECK(j.id_assigned);
  CHECK(job::valid_id(j.id));
  CHECK(j.payload == nlohmann::json{{"a", 1}});
  // The assigned id travels with the job's text, which keeps every other field.
  auto again = job::parse(j.raw, rules());
  REQUIRE(std::holds_alternative<job::Job>(again));
  CHECK(std::get<job::Job>(again).id == j.id);
  CHECK_FALSE(std::get<job::Job>(again).id_assigned);
  CHECK(nlohmann::json::parse(j.raw).at("extra") == nlohmann::json{1, 2});
}

TEST_CASE("invalid jobs say what is wrong", "[job]") {
  CHECK_THAT(error_of("not json"), Catch::Contains("not JSON") && Catch::Contains("at byte"));
  CHECK_THAT(error_of("[1,2]"), Catch::Contains("got an array"));
  CHECK_THAT(error_of("42"), Catch::Contains("got an integer"));
  CHECK_THAT(error_of("null"), Catch::Contains("got null"));
  CHECK_THAT(error_of(R"("text")"), Catch::Contains("got a string"));
  CHECK_THAT(error_of(R"({"id":"x"})"), Catch::Contains("missing field payload"));
  CHECK_THAT(error_of(R"({"id":7,"payload":1})"), Catch::Contains("field id must be a string"));
  CHECK_THAT(error_of(R"({"id":"a b","payload":1})"), Catch::Contains("[A-Za-z0-9_.:-]"));
  CHECK_THAT(error_of(R"({"handler":3,"payload":1})"), Catch::Contains("handler must be a string"));
  CHECK_THAT(error_of(R"({"handler":"rm","payload":1})"),
             Catch::Contains("unknown handler 'rm'") && Catch::Contains("echo, noop"));
  CHECK_THAT(error_of(R"({"max_attempts":"3","payload":1})"),
             Catch::Contains("max_attempts must be a positive integer, got a string"));
  CHECK_THAT(error_of(R"({"max_attempts":0,"payload":1})"), Catch::Contains("got 0"));
  CHECK_THAT(error_of(R"({"timeout_ms":-5,"payload":1})"), Catch::Contains("got -5"));
  CHECK_THAT(error_of(R"({"timeout_ms":1.5,"payload":1})"), Catch::Contains("got a number"));
  // nlohmann throws out_of_range, not parse_error, for this: it must not escape either.
  CHECK_THAT(error_of(R"({"timeout_ms":1e400,"payload":1})"),
             Catch::Contains("not usable JSON: number overflow parsing '1e400'"));
  CHECK_THAT(error_of(R"({"payload":")" + std::string(2000, 'x') + R"("})"),
             Catch::Contains("over max_job_bytes (1000)"));
}

TEST_CASE("JSON errors say where: a byte of the text, or its end when it stops short", "[job]") {
  auto why = [](const std::string& text) {
    auto parsed = job::parse_json(text);
    return std::holds_alternative<std::string>(parsed) ? std::get<std::string>(parsed) : "";
  };
  // A byte inside the text: counted from 1, as nlohmann does (the x is the 4th byte).
  CHECK_THAT(why("[1,x]"), Catch::EndsWith(" (at byte 4 of 5)"));
  // Cut short: not "at byte 21 of 20", a byte that is not there.
  const std::string cut = R"({"id":"x","payload":)";
  CHECK_THAT(why(cut), Catch::Contains("unexpected end of input") &&
                           Catch::EndsWith(" (at the end, after byte 20)"));
  CHECK_THAT(why(""), Catch::EndsWith(" (the text is empty)"));
  CHECK_THAT(error_of(cut), Catch::EndsWith(" (at the end, after byte 20)"));
}

TEST_CASE("a job that waits for others is refused, not run as if it had no dependencies", "[job]") {
  // The protocol that holds such a job is not in this version: running it at once would break the
  // order its submitter asked for, so it is dead at once with a reason, under its own id.
  auto v = job::parse(R"({"id":"b","after":["a"],"payload":1})", rules());
  REQUIRE(std::holds_alternative<job::Invalid>(v));
  CHECK(std::get<job::Invalid>(v).id == "b");
  CHECK_THAT(std::get<job::Invalid>(v).error,
             Catch::Contains("field after") && Catch::Contains("not in this version"));
  // A wrong `after` is named as such first.
  CHECK_THAT(error_of(R"({"after":"a","payload":1})"),
             Catch::StartsWith("field after must be a list of job ids"));
  // A policy alone asks for nothing to wait for; a wrong one is named.
  CHECK(error_of(R"({"on_dependency_failure":"run","payload":1})") == "(valid)");
  CHECK_THAT(error_of(R"({"on_dependency_failure":"retry","payload":1})"),
             Catch::StartsWith("field on_dependency_failure must be \"fail\", \"run\" or "
                               "\"skip\", got 'retry'"));
  // A field that merely has a similar name, or sits inside the payload, is not refused.
  CHECK(error_of(R"({"payload":{"after":["a"]},"afterwards":1})") == "(valid)");
}

namespace {

// What read_dependencies makes of a job object, as the queue `q` would read it: its error, or
// the references it read and its policy.
std::string deps_of(const std::string& text, const std::string& own_id = "me") {
  job::Rules r = rules();
  r.queue = "q";
  job::Job j;
  auto e = job::read_dependencies(nlohmann::json::parse(text), r, own_id, j);
  if (e) return *e;
  std::string out;
  for (const auto& d : j.after) out += "[" + d.queue + "|" + d.id + "]";
  return out + " " + job::dependency_policy_name(j.on_dependency_failure);
}

}  // namespace

TEST_CASE("after names jobs of the queue or of others; each mistake is named at its entry",
          "[job]") {
  CHECK(deps_of(R"({"after":["a","images/b","q/c"]})") == "[|a][images|b][|c] fail");
  CHECK(deps_of(R"({"after":[],"on_dependency_failure":"skip"})") == " skip");
  CHECK(deps_of(R"({"after":null,"on_dependency_failure":"run"})") == " run");
  CHECK(deps_of(R"({"after":["a",1]})") ==
        "field after[1] must be a job id (ID or QUEUE/ID), got an integer");
  CHECK_THAT(deps_of(R"({"after":["a/b/c"]})"),
             Catch::StartsWith("field after[0]: 'a/b/c' is not a job id"));
  CHECK_THAT(deps_of(R"({"after":["bad queue/x"]})"),
             Catch::StartsWith("field after[0]: queue 'bad queue' in 'bad queue/x' must be"));
  CHECK_THAT(deps_of(R"({"after":["/x"]})"), Catch::StartsWith("field after[0]: queue ''"));
  CHECK_THAT(deps_of(R"({"after":["x/"]})"), Catch::StartsWith("field after[0]: 'x/' is not"));
  CHECK_THAT(deps_of(R"({"after":[""]})"), Catch::StartsWith("field after[0]: '' is not"));
  // The same job twice, however it is written; the job itself.
  CHECK(deps_of(R"({"after":["a","q/a"]})") == "field after[1]: 'a' is named twice");
  CHECK(deps_of(R"({"after":["images/a","images/a"]})") ==
        "field after[1]: 'images/a' is named twice");
  CHECK(deps_of(R"({"after":["a","a"]})") == "field after[1]: 'a' is named twice");
  CHECK(deps_of(R"({"after":["q/me"]})") == "field after[0]: a job cannot wait for itself ('me')");
  // The same id in another queue is another job.
  CHECK(deps_of(R"({"after":["images/me"]})") == "[images|me] fail");
  // jobqd writes `dependencies` for a job that waits; without `after` it is any unknown field.
  CHECK_THAT(deps_of(R"({"after":["a"],"dependencies":[]})"),
             Catch::StartsWith("field dependencies: jobqd writes it"));
  CHECK(deps_of(R"({"dependencies":[]})") == " fail");
  // A bounded fan-in.
  nlohmann::json many = {{"after", nlohmann::json::array()}};
  for (std::size_t i = 0; i <= job::kMaxDependencies; ++i)
    many["after"].push_back(std::to_string(i));
  CHECK(deps_of(many.dump()) ==
        "field after names 10001 jobs, over the most a job may wait for (10000)");
  many["after"].erase(many["after"].begin());
  CHECK_THAT(deps_of(many.dump()), Catch::EndsWith("] fail"));
  // An entry quoted in an error stays short and valid UTF-8 whatever it held.
  const std::string junk = std::string(300, 'x') + "\xff/";
  CHECK(deps_of(nlohmann::json{{"after", {junk}}}.dump(-1, ' ', false,
                                                       nlohmann::json::error_handler_t::replace))
            .size() < 200);
}

TEST_CASE("an invalid job keeps its own id when it had a valid one", "[job]") {
  auto v = job::parse(R"({"id":"mine","handler":"nope","payload":1})", rules());
  REQUIRE(std::holds_alternative<job::Invalid>(v));
  CHECK(std::get<job::Invalid>(v).id == "mine");
}

TEST_CASE("a null id is no id: the assigned one wins in every later copy", "[job]") {
  for (std::string raw : {R"({"id":null,"payload":1})", R"({"payload":1,"id":null})",
                          R"({ "payload" : 1 , "id" : null } )"}) {
    auto v = job::parse(raw, rules());
    REQUIRE(std::holds_alternative<job::Job>(v));
    const auto& j = std::get<job::Job>(v);
    CHECK(j.id_assigned);
    auto again = job::parse(j.raw, rules());  // a retry: the same id, not a new one
    REQUIRE(std::holds_alternative<job::Job>(again));
    CHECK(std::get<job::Job>(again).id == j.id);
  }
}

TEST_CASE("the size limit is on the job as submitted, not on the id jobqd added", "[job]") {
  std::string raw = R"({"payload":")" + std::string(980, 'x') + R"("})";  // 995 bytes
  REQUIRE(raw.size() <= 1000);
  auto v = job::parse(raw, rules(1000));
  REQUIRE(std::holds_alternative<job::Job>(v));
  const auto& j = std::get<job::Job>(v);
  REQUIRE(j.raw.size() > 1000);
  CHECK(job::assigned_id_bytes(j.raw) == j.raw.size() - raw.size());
  CHECK(std::holds_alternative<job::Job>(job::parse(j.raw, rules(1000))));
  // A job over the limit is still over it with an id-like ending of its own.
  std::string over =
      R"({"payload":")" + std::string(1010, 'x') + R"(","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"})";
  CHECK_THAT(error_of(over, 1000), Catch::Contains("over max_job_bytes"));
}

TEST_CASE("payload_text: the payload's value as written in the job, whatever comes around it",
          "[job][payload]") {
  using Sv = std::optional<std::string_view>;
  CHECK(job::payload_text(R"({"payload":1})") == Sv("1"));
  CHECK(job::payload_text(R"( { "id" : "a", "payload" :  {"b": [1, "}]\"{" ] } , "x":2 })") ==
        Sv(R"({"b": [1, "}]\"{" ] })"));
  // Not a top-level key: one inside another value, or a string that says payload.
  CHECK(job::payload_text(R"({"meta":{"payload":1},"note":"\"payload\":2","payload":"three"})") ==
        Sv(R"("three")"));
  CHECK(job::payload_text(R"({"payload":null,"id":"x"})") == Sv("null"));
  CHECK(job::payload_text(R"({"payload":-1.5e3})") == Sv("-1.5e3"));
  // A key written with escapes is the same key.
  CHECK(job::payload_text(R"({"p\u0061yload":[true]})") == Sv("[true]"));
  // jobqd's marker after it changes nothing.
  CHECK(job::payload_text(R"({"payload":{"a":1},"_jobq":"1|5|9|n|id"})") == Sv(R"({"a":1})"));
  // Anything else: none, never a throw or a read past the end.
  for (const char* bad : {"", "[]", "1", "{", R"({"payload")", R"({"payload":)", R"({"payload":"x)",
                          R"({"payload":{"a":1)", R"({"id":"a" "payload":1})", R"({"id":1})",
                          R"({"p\u00)", "{\"pay"}) {
    INFO(bad);
    CHECK_FALSE(job::payload_text(bad));
  }
  // Every parsed job's payload is found, and reads back as what the parser made of it.
  for (const char* raw : {R"({"payload":{"z":1,"a":[1,2]},"id":"k"})",
                          "{\n  \"handler\": \"echo\",\n  \"payload\": \"caf\u00e9\"\n}\n"}) {
    auto v = job::parse(raw, rules());
    REQUIRE(std::holds_alternative<job::Job>(v));
    const auto& j = std::get<job::Job>(v);
    const auto text = job::payload_text(j.raw);
    REQUIRE(text);
    CHECK(nlohmann::json::parse(*text) == j.payload);
  }
}

TEST_CASE("JSON nesting is bounded before anything is built", "[job][text]") {
  auto nested = [](std::size_t n) { return std::string(n, '[') + std::string(n, ']'); };
  CHECK_FALSE(job::nesting_over(nested(128)).has_value());
  CHECK(job::nesting_over(nested(129)) == std::optional<std::size_t>(128));
  // Brackets inside strings, escaped quotes included, are text.
  CHECK_FALSE(job::nesting_over(R"(["[[[[", "\"[[[[", {"a":"}}}{{{"}])", 2).has_value());
  CHECK(job::nesting_over(R"({"a":{"b":{}}})", 2).has_value());
  // 100,000 levels, 200 KB, under max_job_bytes: refused with the place, nothing built.
  std::string raw = R"({"id":"deep","payload":)" + nested(100000) + "}";
  auto v = job::parse(raw, rules(1024 * 1024));
  REQUIRE(std::holds_alternative<job::Invalid>(v));
  CHECK_THAT(std::get<job::Invalid>(v).error,
             Catch::Contains("nested deeper than 128 levels (at byte 150 of 200024)"));
  // A job at the limit still parses, and its payload serialises.
  std::string ok = R"({"payload":)" + nested(127) + "}";
  auto fine = job::parse(ok, rules(1024 * 1024));
  REQUIRE(std::holds_alternative<job::Job>(fine));
  CHECK(std::get<job::Job>(fine).payload.dump() == nested(127));
}

TEST_CASE("errors about bad input are valid UTF-8", "[job][text]") {
  CHECK(job::is_utf8("plain"));
  CHECK(job::is_utf8("caf\xc3\xa9 \xf0\x9f\x98\x80"));
  CHECK_FALSE(job::is_utf8("\xff"));
  CHECK_FALSE(job::is_utf8("\xc0\xaf"));          // overlong '/'
  CHECK_FALSE(job::is_utf8("\xed\xa0\x80"));      // a surrogate
  CHECK_FALSE(job::is_utf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  CHECK_FALSE(job::is_utf8("\xe2\x82"));          // cut short
  CHECK(job::to_utf8("a\xff"
                     "b") ==
        "a\xef\xbf\xbd"
        "b");
  CHECK(job::clip_utf8("\xc3\xa9\xc3\xa9", 3) == "\xc3\xa9...");  // never half a character
  for (std::string raw : {std::string("{\"payload\":\xff}"), std::string("\xfe\xff"),
                          std::string("{\"id\":\"\xc3\",\"payload\":1}"),
                          std::string("{\"handler\":\"\xe2\x82\",\"payload\":1}")}) {
    auto v = job::parse(raw, rules());
    REQUIRE(std::holds_alternative<job::Invalid>(v));
    INFO(std::get<job::Invalid>(v).error);
    CHECK(job::is_utf8(std::get<job::Invalid>(v).error));
  }
}

TEST_CASE("a job's unique key: its own unique_key, else the queue's payload field or id",
          "[job][unique]") {
  auto key_of = [](const std::string& raw, std::vector<std::string> from = {}) {
    job::Rules r = rules();
    r.unique_from = std::move(from);
    auto v = job::parse(raw, r);
    if (auto* bad = std::get_if<job::Invalid>(&v)) return "invalid: " + bad->error;
    return std::get<job::Job>(v).unique_key;
  };
  // Its own wins; none without a rule.
  CHECK(key_of(R"({"payload":{"u":1},"unique_key":"k1"})") == "k1");
  CHECK(key_of(R"({"payload":{"u":1},"unique_key":"k1"})", {"payload", "u"}) == "k1");
  CHECK(key_of(R"({"payload":{"u":1}})").empty());
  CHECK(key_of(R"({"payload":{"u":1},"unique_key":null})").empty());
  // From the payload: a string as it is, a number or boolean as JSON text, nested fields.
  CHECK(key_of(R"({"payload":{"u":"ann"}})", {"payload", "u"}) == "ann");
  CHECK(key_of(R"({"payload":{"u":42}})", {"payload", "u"}) == "42");
  CHECK(key_of(R"({"payload":{"u":true}})", {"payload", "u"}) == "true");
  CHECK(key_of(R"({"payload":{"o":{"id":"x7"}}})", {"payload", "o", "id"}) == "x7");
  // Missing or null anywhere on the way: no key (the job runs as any other).
  CHECK(key_of(R"({"payload":{}})", {"payload", "u"}).empty());
  CHECK(key_of(R"({"payload":{"u":null}})", {"payload", "u"}).empty());
  CHECK(key_of(R"({"payload":7})", {"payload", "u"}).empty());
  CHECK(key_of(R"({"payload":{"o":[1]}})", {"payload", "o", "id"}).empty());
  // From the id: the job's own only (an id jobqd gives is unique already).
  CHECK(key_of(R"({"id":"j1","payload":1})", {"id"}) == "j1");
  CHECK(key_of(R"({"payload":1})", {"id"}).empty());
  // Not a key: invalid_job, saying why.
  CHECK(key_of(R"({"payload":1,"unique_key":5})") ==
        "invalid: field unique_key must be a string, got an integer");
  CHECK(key_of(R"({"payload":1,"unique_key":""})") ==
        "invalid: field unique_key must be 1-256 bytes, got 0");
  CHECK(key_of(R"({"payload":1,"unique_key":")" + std::string(257, 'k') + R"("})") ==
        "invalid: field unique_key must be 1-256 bytes, got 257");
  CHECK(key_of(R"({"payload":1,"unique_key":")" + std::string(256, 'k') + R"("})") ==
        std::string(256, 'k'));
  CHECK(key_of(R"({"payload":{"u":{"a":1}}})", {"payload", "u"}) ==
        "invalid: the unique key payload.u (the queue's unique.key) must be a string or a "
        "number, got an object");
  CHECK(key_of(R"({"payload":{"u":""}})", {"payload", "u"}) ==
        "invalid: the unique key payload.u (the queue's unique.key) must be 1-256 bytes, got 0");
}

TEST_CASE("priority: a level or invalid; read from the text alone the same way",
          "[job][priority]") {
  job::Rules rules;
  rules.default_handler = "h";
  const auto level = [&](const std::string& text) {
    auto parsed = job::parse(text, rules);
    REQUIRE(std::holds_alternative<job::Job>(parsed));
    const auto p = std::get<job::Job>(parsed).priority;
    // A due retry is sent to its list by the text alone (priority_of_text): it must agree.
    CHECK(job::priority_of_text(text) == p);
    return p;
  };
  CHECK(level(R"({"payload":1})") == job::Priority::normal);
  CHECK(level(R"({"payload":1,"priority":null})") == job::Priority::normal);
  CHECK(level(R"({"payload":{"priority":"low"},"priority":"high"})") == job::Priority::high);
  CHECK(level(R"({"pr\u0069ority":"l\u006fw","payload":1})") == job::Priority::low);
  CHECK(level(R"({"payload":1, "priority" : "normal"})") == job::Priority::normal);
  for (const char* bad : {R"({"payload":1,"priority":"urgent"})", R"({"payload":1,"priority":1})",
                          R"({"payload":1,"priority":"HIGH"})"}) {
    auto parsed = job::parse(bad, rules);
    REQUIRE(std::holds_alternative<job::Invalid>(parsed));
    CHECK(std::get<job::Invalid>(parsed).error.find("field priority must be") == 0);
  }
}
