// spdlog configuration, with a custom flag that renders the level as a syslog priority.
#include "ops/log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace jq::ops {
namespace {

// "<N>" as journald reads it from a stream: 7 debug, 6 info, 4 warning, 3 error, 2 critical.
class SyslogPriority final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const char* p = "<6>";
    switch (msg.level) {
      case spdlog::level::trace:
      case spdlog::level::debug:
        p = "<7>";
        break;
      case spdlog::level::warn:
        p = "<4>";
        break;
      case spdlog::level::err:
        p = "<3>";
        break;
      case spdlog::level::critical:
        p = "<2>";
        break;
      default:
        break;
    }
    dest.append(p, p + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<SyslogPriority>();
  }
};

// True when stderr is the journal's stream ($JOURNAL_STREAM is "device:inode" of it).
bool stderr_is_journal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (!js) return false;
  struct stat st;
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  return st.st_dev == dev && st.st_ino == ino;
}

// One JSON object a line: the time as in text lines, the level, the message (invalid UTF-8
// replaced, so that every line parses).
class JsonFormatter final : public spdlog::formatter {
 public:
  JsonFormatter() : time_("%Y-%m-%dT%H:%M:%S.%e%z", spdlog::pattern_time_type::local, "") {}
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    spdlog::memory_buf_t when;
    time_.format(msg, when);
    const auto level = spdlog::level::to_string_view(msg.level);
    nlohmann::ordered_json j = {{"time", std::string(when.data(), when.size())},
                                {"level", std::string(level.data(), level.size())},
                                {"msg", std::string(msg.payload.data(), msg.payload.size())}};
    const std::string line =
        j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }

 private:
  spdlog::pattern_formatter time_;
};

// The journal's priority, then the JSON line.
class JournalJson final : public spdlog::formatter {
 public:
  JournalJson()
      : priority_(
            std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::local, "")) {
    priority_->add_flag<SyslogPriority>('*').set_pattern("%*");
  }
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    priority_->format(msg, dest);
    json_.format(msg, dest);
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JournalJson>();
  }

 private:
  std::unique_ptr<spdlog::pattern_formatter> priority_;
  JsonFormatter json_;
};

}  // namespace

void setup_logging(const std::string& level, bool json) {
  auto logger =
      std::make_shared<spdlog::logger>("jobqd", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (json) {
    if (stderr_is_journal()) {
      logger->set_formatter(std::make_unique<JournalJson>());
    } else {
      logger->set_formatter(std::make_unique<JsonFormatter>());
    }
  } else {
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    if (stderr_is_journal()) {
      formatter->add_flag<SyslogPriority>('*').set_pattern("%*%v");
    } else {
      // Local time with its offset (+00:00 in a container without TZ): never a bare time.
      formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
    }
    logger->set_formatter(std::move(formatter));
  }
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace jq::ops
