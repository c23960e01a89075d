// The Lua scripts of the reliable-fetch protocol (each documented where it is defined).
#pragma once

#include "redis/script.hpp"

namespace jq::store::scripts {

const redis::Script& fetch();
const redis::Script& apply();
const redis::Script& acquire();
const redis::Script& renew();
const redis::Script& release();
const redis::Script& recover();
const redis::Script& reclaim();
const redis::Script& promote();

}  // namespace jq::store::scripts
