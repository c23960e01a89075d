// Regression tests for what the fuzz targets found (fuzz/README.md). Each input is also kept in
// fuzz/regress/<target>/, which `make fuzz` replays under ASan and UBSan.
#include <catch2/catch.hpp>

#include <chrono>
#include <ctime>
#include <set>
#include <string>
#include <variant>

#include "handlers/http.hpp"
#include "job/job.hpp"
#include "job/text.hpp"

using namespace jq;
using namespace std::chrono_literals;

TEST_CASE("fuzz: a Retry-After date past 2262 is capped at ten years, without overflow",
          "[http][fuzz]") {
  // fuzz/regress/http_response/retry_after_far_date: such a date used to overflow the
  // nanoseconds of system_clock::from_time_t (UBSan: signed integer overflow).
  using handlers::parse_retry_after;
  const auto ten_years = std::chrono::milliseconds(10LL * 365 * 24 * 3600 * 1000);
  for (const char* far : {"Wed, 21 Oct 8197 07:27:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
                          "Fri Dec 31 23:59:59 9999", "Sat, 01 Jan 2101 00:00:00 GMT"}) {
    INFO(far);
    auto v = parse_retry_after(far);
    REQUIRE(v);
    CHECK(*v == ten_years);
  }
  // A near date keeps its value, to the second.
  std::time_t in_an_hour = std::time(nullptr) + 3600;
  std::tm tm{};
  gmtime_r(&in_an_hour, &tm);
  char date[64];
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  auto near = parse_retry_after(date);
  REQUIRE(near);
  CHECK(*near > 3598s);
  CHECK(*near <= 3600s);
}

TEST_CASE("fuzz: a NUL byte in a job is invalid JSON, not the end of the document", "[job][fuzz]") {
  // fuzz/regress/job/id_after_nul.json: nlohmann stopped reading at the NUL and ignored the
  // rest, where with_id had put the assigned id: the job got a new id on every parse.
  const std::set<std::string> handlers{"h"};
  const job::Rules rules{"h", &handlers, 1 << 20, {}, "", false};
  using namespace std::string_literals;
  for (std::string text :
       {"{\"payload\":1}\0}"s, "{\"id\":\"a\",\"payload\":1}\0{\"id\":\"b\"}"s, "\0{}"s}) {
    INFO(text.size());
    auto parsed = job::parse(text, rules);
    REQUIRE(std::holds_alternative<job::Invalid>(parsed));
    CHECK(std::get<job::Invalid>(parsed).error.find("a NUL byte (at byte") != std::string::npos);
  }
  // Escaped, a NUL is an ordinary character of a string.
  auto ok = job::parse(R"({"payload":"a\u0000b"})", rules);
  REQUIRE(std::holds_alternative<job::Job>(ok));
  CHECK(std::get<job::Job>(ok).payload.get<std::string>() == "a\0b"s);
}

TEST_CASE("fuzz: a number too large for a double makes the job invalid, not an exception",
          "[job][fuzz]") {
  // fuzz/regress/job/number_overflow.json: nlohmann's out_of_range 406 escaped job::parse.
  const std::set<std::string> handlers{"h"};
  const job::Rules rules{"h", &handlers, 1 << 20, {}, "", false};
  for (const char* text : {R"({"payload":1e999})", R"({"payload":[-1e400]})"}) {
    INFO(text);
    auto parsed = job::parse(text, rules);
    REQUIRE(std::holds_alternative<job::Invalid>(parsed));
    CHECK(std::get<job::Invalid>(parsed).error.find("not usable JSON") != std::string::npos);
  }
}
