// The Lua scripts of the protocol, shared by jobqd and jobqctl (each documented where defined).
#pragma once

#include "redis/script.hpp"

namespace jq::store::scripts {

// The daemon's.
const redis::Script& fetch();
const redis::Script& settle();
const redis::Script& acquire();
const redis::Script& renew();
const redis::Script& release();
const redis::Script& recover();
const redis::Script& reclaim();
const redis::Script& promote();
const redis::Script& repair();
const redis::Script& spool_state();
const redis::Script& control();

// Both's.
const redis::Script& depths();
const redis::Script& heartbeat();

// jobqctl's.
const redis::Script& submit();
const redis::Script& requeue_dead();
const redis::Script& purge_dead();
const redis::Script& cancel();

}  // namespace jq::store::scripts
