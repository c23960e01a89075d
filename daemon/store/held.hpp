// The settlements of a job held in Redis, made from how it was read (a Reading): its marker, its
// copy's cut, its claim. The Redis source sends these; tests drive the protocol with them.
#pragma once

#include <string>

#include "job/error_kind.hpp"
#include "store/queue_store.hpp"
#include "store/settler.hpp"

namespace jq::store::held {

/// The attempt has run for active_after: its state says active (an id jobqd made up goes into
/// the held copy's marker then, so that recovery finds that state again).
Settlement start(const Reading& r, const std::string& started_at);
Settlement ok(const Reading& r, const std::string& started_at, std::string result);
/// Runs again after `delay`, the attempt counted.
Settlement retry(const Reading& r, const std::string& started_at, std::string error,
                 job::ErrorKind kind, Millis delay);
/// Failed for good, kept with the dead jobs (an invalid job too: it never started, and is
/// recorded under a fresh id if its own belongs to another job).
Settlement dead(const Reading& r, const std::string& started_at, std::string error,
                job::ErrorKind kind);
Settlement cancel(const Reading& r, const std::string& started_at, std::string error);
/// Back to pending as it came, the attempt not counted. `owns_id` false: its id was never
/// claimed (the state at its key may be another job's), so the state is left alone.
Settlement back(const Reading& r, bool owns_id = true);
/// Another job owns its id: it waits in delayed for a second, marked with its own nonce (so
/// that it is still the same job when it comes back), the attempt not counted.
Settlement wait(const Reading& r);
/// Its unique key's lock goes if it names the job: pushed right after its end (or as it starts,
/// for a queue whose locks hold only while jobs wait).
Settlement unlock(const Reading& r);

}  // namespace jq::store::held
