// Schedules as Redis holds them (docs/schedules.md): a schedule's definition in its queue's index
// as JSON (jobqctl's and the daemons' alike), the id and JSON of the job a tick enqueues.
#pragma once

#include <cstdint>
#include <string>
#include <variant>

#include "config/config.hpp"

namespace jq::store {

/// The stored definition of `s` (its name and queue are the index's field and key): cron,
/// timezone, job (an object), catch_up, jitter_ms.
std::string encode_schedule(const config::ScheduleConfig& s);

/// A stored definition read back and checked as the config checks one (cron, zone, catch_up,
/// jitter, a job object without an id); the string says what is wrong, naming the field.
std::variant<config::ScheduleConfig, std::string> decode_schedule(const std::string& name,
                                                                  const std::string& queue,
                                                                  const std::string& text);

/// What `next` was computed from: a change of either starts the schedule's ticks anew.
std::string schedule_timing(const config::ScheduleConfig& s);

/// The id of the job a schedule enqueues for a tick: `NAME:2026-12-07T03:00:00Z` (UTC), so that
/// a tick's job is recognisable and a tick can never enqueue two jobs under two ids.
std::string tick_id(const std::string& name, std::int64_t tick_ms);

/// The job a tick enqueues: the schedule's job with `id` in front.
std::string tick_job(const config::ScheduleConfig& s, const std::string& id);

}  // namespace jq::store
