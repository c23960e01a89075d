// The version jobqd and jobqctl report, defined in one tiny file the Makefile generates.
#pragma once

namespace jq {

/// `git describe` of the sources built (`-dirty` when daemon/ or the Makefile differed from the
/// commit), or what the build was given (`make JOBQD_VERSION=...`, the Dockerfile's build arg).
/// Defined in $(BUILD)/gen/version.cpp rather than passed as a -D flag: a new version then
/// recompiles that one file, not every object that prints it.
const char* version() noexcept;

}  // namespace jq
