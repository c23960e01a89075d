// The protocol's scripts (daemon/store/lua/*.lua, each with the shared prelude in front), by name.
#pragma once

#include <string>
#include <vector>

#include "redis/script.hpp"

namespace jq::store::scripts {

// The daemon's.
const redis::Script& fetch();
const redis::Script& claim();
const redis::Script& unclaim();
const redis::Script& settle();
const redis::Script& acquire();
const redis::Script& renew();
const redis::Script& release();
const redis::Script& expired();
const redis::Script& recover();
const redis::Script& due();
const redis::Script& promote();
const redis::Script& fold();
const redis::Script& dead_victims();
const redis::Script& repair();
const redis::Script& control();
const redis::Script& heartbeat();
const redis::Script& history();
const redis::Script& slow_down();
const redis::Script& schedule_define();
const redis::Script& schedule_fire();
const redis::Script& group_sort();      // group_by (docs/groups.md)
const redis::Script& group_fetch();     // group_by
const redis::Script& ungroup();         // a queue without group_by
const redis::Script& after_wait();      // jobs that wait for others (docs/workflows.md)
const redis::Script& after_register();  // after
const redis::Script& after_resolve();   // after
const redis::Script& after_expire();    // after
const redis::Script& flow();            // a flow on a cluster: its record (daemon and jobqctl)
// Both's.
const redis::Script& depths();
const redis::Script& drop_dead();
// jobqctl's.
const redis::Script& submit();
const redis::Script& requeue_dead();
const redis::Script& cancel();
const redis::Script& scan_states();
const redis::Script& schedule_control();

/// Every script, for tests that run each one.
std::vector<const redis::Script*> all();

/// Tests only: every script is rebuilt with `chunk` in front of the prelude (empty: as built),
/// `$NAME` in it replaced by the script's name. The key guard uses it to check that every key a
/// script touches was given in KEYS.
void set_guard(const std::string& chunk);

}  // namespace jq::store::scripts
