// Job ids jobqd assigns: time-ordered and unique (ULID layout: 48-bit ms time, 80 random bits).
#pragma once

#include <string>

namespace jq::job {

/// 26 characters of Crockford base32. Ids made later sort later (within one process they are
/// strictly increasing even within a millisecond); across processes the random part keeps them
/// unique.
std::string new_id();

/// The contract's id rule: 1-128 characters of [A-Za-z0-9_.:-].
bool valid_id(std::string_view id);

}  // namespace jq::job
