// Jobs built in memory for handler tests, as the engine would hand them over.
#pragma once

#include <string>

#include "job/job.hpp"

namespace jq::test {

inline job::Job make_job(const std::string& handler, const std::string& payload_json,
                         const std::string& id = "job-1") {
  job::Job j;
  j.id = id;
  j.handler = handler;
  j.payload = nlohmann::json::parse(payload_json);
  j.raw = R"({"id":")" + id + R"(","payload":)" + payload_json + "}";
  return j;
}

}  // namespace jq::test
