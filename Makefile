# jobqd build: `make run` and `make test` work on a fresh Debian 12 machine (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := all
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules --output-sync=target
ifeq ($(filter -j%,$(MAKEFLAGS)),)
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)
endif

# ---- configuration ---------------------------------------------------------------------------
# SANITIZE=address,undefined or SANITIZE=thread builds into a directory of its own.
SANITIZE ?=
comma := ,
ifeq ($(SANITIZE),)
BUILD ?= build
else
BUILD ?= build-$(subst $(comma),-,$(SANITIZE))
endif
PREFIX ?= /usr/local
DESTDIR ?=
CONFIG ?= config/dev.yaml
TEST_ARGS ?=

CXX ?= g++
PKGS := libevent libevent_openssl hiredis yaml-cpp libsystemd spdlog fmt openssl
# pkg-config only once the packages exist (deps runs first on a fresh machine).
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# Howard Hinnant's date/tz (libhowardhinnant-date-dev: the time zones of cron schedules, the
# library C++20's std::chrono::tzdb came from, which GCC 12's libstdc++ lacks) has no pkg-config
# file. Debian builds libdate-tz with these defines (its CMake package exports them): USE_OS_TZDB
# reads /usr/share/zoneinfo (tzdata) and never downloads anything. Every file that includes
# date/tz.h must see the same ones, or its time_zone has another layout than the library's.
DATE_CFLAGS := -DUSE_OS_TZDB=1 -DONLY_C_LOCALE=1 -DHAS_STRING_VIEW=1
DATE_LIBS := -ldate-tz

OPT ?= -O2
CXXFLAGS ?= $(OPT) -g
override CXXFLAGS += -std=c++20 -Wall -Wextra -Werror -MMD -MP -Idaemon -I. $(PKG_CFLAGS) \
  $(DATE_CFLAGS)
LDLIBS = $(PKG_LIBS) $(DATE_LIBS) -pthread
ifneq ($(SANITIZE),)
# GCC 12's -Wmaybe-uninitialized misfires on sanitizer-instrumented libstdc++ (<regex> in Catch's
# runner); the plain build keeps the warning.
override CXXFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all \
  -Wno-maybe-uninitialized
override LDFLAGS += -fsanitize=$(SANITIZE)
endif

# ---- packages --------------------------------------------------------------------------------
# Exactly what building, testing and running need (Debian 12 package names). The Dockerfile's
# build stage installs BUILD_PACKAGES (tests/integration/test_packaging.cpp compares them).
BUILD_PACKAGES := g++ make pkg-config libevent-dev libhiredis-dev libyaml-cpp-dev libssl-dev \
  nlohmann-json3-dev libspdlog-dev libfmt-dev libsystemd-dev libcli11-dev \
  libhowardhinnant-date-dev
# make test checks the format (clang-format); tests/integration/test_build.cpp runs git;
# libfaketime moves a daemon's clock away from Redis' (tests/integration/test_schedules.cpp).
TEST_PACKAGES := catch2 redis-server redis-sentinel redis-tools python3 python3-redis openssl ca-certificates \
  procps systemd zsh clang-format git lua-check chromium libfaketime
PACKAGES := $(BUILD_PACKAGES) $(TEST_PACKAGES)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

define install_missing
	@missing=$$(for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $$missing >/dev/null; \
	fi
endef

# ---- sources ---------------------------------------------------------------------------------
LIB_SRC := $(shell find daemon -name '*.cpp' ! -path 'daemon/cli/*' ! -name main.cpp | sort)
CLI_SRC := $(wildcard daemon/cli/*.cpp)
# The image's build context has no tests/ (.dockerignore).
TEST_SRC := $(shell find tests -name '*.cpp' 2>/dev/null | sort)
BENCH_SRC := $(wildcard bench/*.cpp)

obj = $(patsubst %.cpp,$(BUILD)/obj/%.o,$(1))
# The protocol's Lua (daemon/store/lua/*.lua) goes into the library as one generated source, and
# each script, prelude in front, into $(BUILD)/lua/ for `redis-cli --eval` and luacheck.
LUA_SRC := $(sort $(wildcard daemon/store/lua/*.lua))
LUA_GEN := $(BUILD)/gen/store/lua_text.cpp
LUA_OBJ := $(BUILD)/obj/gen/store/lua_text.o
LUA_RUN := $(patsubst daemon/store/lua/%,$(BUILD)/lua/%,$(filter-out %/prelude.lua,$(LUA_SRC)))
# The dashboard's files (daemon/ops/dashboard/: text only) go in as one generated table too.
ASSET_SRC := $(sort $(wildcard daemon/ops/dashboard/*))
ASSET_GEN := $(BUILD)/gen/ops/assets.cpp
ASSET_OBJ := $(BUILD)/obj/gen/ops/assets.o
LIB_OBJ := $(call obj,$(LIB_SRC)) $(LUA_OBJ) $(ASSET_OBJ)
LIB := $(BUILD)/libjobqd.a
JOBQD := $(BUILD)/jobqd
JOBQCTL := $(BUILD)/jobqctl
TESTS := $(BUILD)/jobqd_tests
BENCHES := $(patsubst bench/%.cpp,$(BUILD)/%,$(BENCH_SRC))
# Bench objects come through a pattern chain: keep them (not intermediate files to delete).
.SECONDARY: $(call obj,$(BENCH_SRC)) build-fuzz/gen/store/lua_text.cpp

.PHONY: test-tools all deps lint test run bench install format format-check clean version image

all: $(JOBQD) $(JOBQCTL)

# NO_DEPS=1: the packages are there already (the Dockerfile's build stage, without the test ones).
deps:
ifeq ($(NO_DEPS),)
	$(call install_missing,$(PACKAGES))
endif

# `make V=1` shows the full commands.
ifeq ($(V),1)
Q :=
say = @true
else
Q := @
say = @echo "  $(1) $(2)"
endif

# ---- version ---------------------------------------------------------------------------------
# What the binaries report (--version, the banner, /metrics, jobqctl workers). A build outside git
# is given it: `make JOBQD_VERSION=...` (the Dockerfile's build arg). Otherwise `git describe`,
# `-dirty` only when what goes into the binaries differs from the commit: daemon/ (changed or new
# files) and this Makefile (the flags). `git describe --dirty` counted any tracked file, so that
# editing config/dev.yaml or a doc changed the version and rebuilt what printed it.
VERSION_INPUTS := daemon Makefile
ifndef JOBQD_VERSION
JOBQD_VERSION := $(shell v=$$(git describe --tags --always 2>/dev/null) || { echo dev; exit; }; \
  git diff --quiet HEAD -- $(VERSION_INPUTS) && \
  [ -z "$$(git ls-files --others --exclude-standard -- $(VERSION_INPUTS))" ] || v=$$v-dirty; \
  echo "$$v")
endif

# It lives in one generated file (daemon/version.hpp declares it), not in a -D flag of every
# object: a new version recompiles that tiny file and relinks, nothing else. The file is
# rewritten only when its text changes, so its time stamp is when the version last changed.
VERSION_CPP := $(BUILD)/gen/version.cpp
VERSION_OBJ := $(BUILD)/gen/version.o
define version_cpp
// Generated by the Makefile: the version of this build (daemon/version.hpp).
#include "version.hpp"

const char* jq::version() noexcept { return R"jobqd($(JOBQD_VERSION))jobqd"; }
endef
ifeq ($(JOBQD_PLAN),)
ifneq ($(file <$(VERSION_CPP)),$(version_cpp))
$(shell mkdir -p $(dir $(VERSION_CPP)))
$(file >$(VERSION_CPP),$(version_cpp))
endif
endif

# ---- progress --------------------------------------------------------------------------------
# Each compile says `[n/N] CXX file`. N, the objects this run has to compile, comes from a dry run
# of this Makefile over the files the goals make (JOBQD_PLAN=1: a compile's recipe is just a
# marker); n from a counter file that each compile increments under flock as it finishes. At the
# finish, not the start: --output-sync prints a job's output when it ends, so with -j the lines
# come out in the order of n (but for two jobs ending in the same instant, which make may print
# either way round).
PROGRESS := $(BUILD)/.progress
plan_targets = $(if $(filter all run install test,$(1)),$(JOBQD) $(JOBQCTL)) \
  $(if $(filter test,$(1)),$(TESTS)) $(if $(filter bench,$(1)),$(BENCHES)) \
  $(if $(filter fuzz $(addprefix fuzz-,$(FUZZ_TARGETS)),$(1)),$(FUZZ_BINS)) \
  $(filter $(BUILD)/% $(FUZZ_BUILD)/%,$(1))
ifeq ($(JOBQD_PLAN),)
# Expanded once, at the end of this file, when every target it names is known.
plan_total = $(shell $(MAKE) -n --no-print-directory -f $(firstword $(MAKEFILE_LIST)) \
  JOBQD_PLAN=1 BUILD=$(BUILD) FUZZ_BUILD=$(FUZZ_BUILD) JOBQD_VERSION=plan \
  $(if $(findstring B,$(filter-out -%,$(firstword $(MAKEFLAGS)))),-B) \
  $(PLAN_TARGETS) 2>/dev/null | grep -c jobqd-plan-object)
# $(call compile,COMMAND,LABEL): the compiler's messages follow the progress line.
define compile
@mkdir -p $(@D)
$(Q)$(1) -c $< -o $@ 2>$@.log; rc=$$?; \
  n=$$(flock $(PROGRESS) bash -c 'n=$$(($$(cat $(PROGRESS)) + 1)); echo $$n >$(PROGRESS); echo $$n'); \
  t=$(PLAN_TOTAL); printf '[%*s/%s] %s %s\n' $${#t} $$n $$t $(2) $<; \
  cat $@.log >&2; rm -f $@.log; exit $$rc
endef
else
compile = @echo jobqd-plan-object
endif

$(BUILD)/obj/%.o: %.cpp | deps
	$(call compile,$(CXX) $(CXXFLAGS),CXX)

# A raw string per file; a file holding the delimiter would end it early, so it is refused.
%/gen/store/lua_text.cpp: $(LUA_SRC)
	@mkdir -p $(@D)
	$(call say,LUA,$@)
	$(Q)if grep -l ')jobqlua"' $^; then echo "those Lua files hold )jobqlua\"" >&2; exit 1; fi; \
	{ echo '// Generated by the Makefile from daemon/store/lua/*.lua: do not edit.'; \
	  echo '#include "store/lua_text.hpp"'; echo 'namespace jq::store::lua {'; \
	  echo 'const Text kTexts[] = {'; \
	  for f in $^; do echo "{\"$$(basename $$f .lua)\", R\"jobqlua("; cat $$f; \
	    echo ')jobqlua"},'; done; \
	  echo '};'; echo 'const std::size_t kCount = sizeof kTexts / sizeof kTexts[0];'; echo '}'; \
	} > $@.tmp && mv $@.tmp $@

$(LUA_OBJ): $(LUA_GEN) | deps
	$(call compile,$(CXX) $(CXXFLAGS),CXX)

# index.html is served at /, every other file at /NAME; its type from its extension (text files
# only: a raw string cannot hold any byte). A file holding the delimiter is refused.
$(ASSET_GEN): $(ASSET_SRC) Makefile
	@mkdir -p $(@D)
	$(call say,ASSETS,$@)
	$(Q)if grep -l ')jobqasset"' $(ASSET_SRC); then echo "those files hold )jobqasset\"" >&2; exit 1; fi; \
	{ echo '// Generated by the Makefile from daemon/ops/dashboard/: do not edit.'; \
	  echo '#include "ops/assets.hpp"'; echo 'namespace jq::ops::assets {'; \
	  echo 'extern const Asset kTable[];'; echo 'extern const std::size_t kCount;'; \
	  echo 'const Asset kTable[] = {'; \
	  for f in $(ASSET_SRC); do n=$$(basename $$f); \
	    case $$n in *.html) t='text/html; charset=utf-8';; *.js) t='text/javascript; charset=utf-8';; \
	      *.css) t='text/css; charset=utf-8';; *.svg) t='image/svg+xml';; \
	      *) echo "$$f: not a dashboard file (.html, .js, .css, .svg)" >&2; exit 1;; esac; \
	    p=/$$n; [ $$n = index.html ] && p=/; \
	    echo "{\"$$p\", \"$$t\", R\"jobqasset("; cat $$f; echo ')jobqasset"},'; done; \
	  echo '};'; echo 'const std::size_t kCount = sizeof kTable / sizeof kTable[0];'; echo '}'; \
	} > $@.tmp && mv $@.tmp $@

$(ASSET_OBJ): $(ASSET_GEN) | deps
	$(call compile,$(CXX) $(CXXFLAGS),CXX)

$(VERSION_OBJ): $(VERSION_CPP) | deps
	$(call compile,$(CXX) $(CXXFLAGS),CXX)

$(BUILD)/lua/%.lua: daemon/store/lua/%.lua daemon/store/lua/prelude.lua
	@mkdir -p $(@D)
	$(Q)cat daemon/store/lua/prelude.lua $< > $@

$(LIB): $(LIB_OBJ) $(VERSION_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(JOBQD): $(call obj,daemon/main.cpp) $(LIB)
	$(call say,LINK,$@)
	$(Q)$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(JOBQCTL): $(call obj,$(CLI_SRC)) $(LIB)
	$(call say,LINK,$@)
	$(Q)$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(TESTS): $(call obj,$(TEST_SRC)) $(LIB)
	$(call say,LINK,$@)
	$(Q)$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/%: $(BUILD)/obj/bench/%.o $(LIB)
	$(call say,LINK,$@)
	$(Q)$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

# Two GCC 12 coroutine miscompilations we keep out of the tree (docs/runtime.md):
# - a co_await inside Catch's CHECK/REQUIRE runs twice (the macro repeats its expression in a dead
#   branch and the coroutine lowering still suspends there);
# - a braced temporary (`Type{...}`) inside a co_await/co_yield expression is destroyed twice;
# - a ternary yielding a class object inside a co_await/co_yield expression is copied bitwise;
# - a lambda with by-value captures written inside a co_await/co_yield expression is destroyed
#   twice (a double free as soon as it captures a std::string).
SOURCES = $(shell find daemon tests bench -name '*.cpp' -o -name '*.hpp' | sort)
# The scripts' prelude defines helpers the others use: it is checked alone (its helpers may go
# unused there), each script with those helpers as known names.
LUA_HELPERS = $(shell sed -nE 's/^local function ([a-z_]+).*/\1/p; s/^local ([a-z_]+) = .*/\1/p' \
  daemon/store/lua/prelude.lua)
lint: $(LUA_RUN)
	$(call install_missing,lua-check)
	@luacheck --formatter plain --std lua51 --codes --globals redis cjson KEYS ARGV --no-unused \
	  daemon/store/lua/prelude.lua
	@luacheck --formatter plain --std lua51 --codes --globals redis cjson KEYS ARGV \
	  --read-globals $(LUA_HELPERS) -- $(filter-out %/prelude.lua,$(LUA_SRC))
	@if grep -nE '\b(CHECK|REQUIRE)(_FALSE)?\s*\(.*co_await' $(TEST_SRC); then \
	  echo "lint: co_await inside CHECK/REQUIRE runs twice under GCC; await into a variable first" >&2; \
	  exit 1; fi
	@if grep -nE '(co_await|co_yield)[^;]*[A-Za-z0-9_>]\{' $(SOURCES) | grep -v 'operator co_await'; then \
	  echo "lint: a braced temporary in a co_await/co_yield expression is destroyed twice by GCC 12;" \
	       "build it in a named local first" >&2; \
	  exit 1; fi
	@if grep -nE '(co_await|co_yield)[^;]*\s\?\s' $(SOURCES); then \
	  echo "lint: a ?: expression inside a co_await/co_yield is miscompiled by GCC 12 (the object" \
	       "is copied bitwise); compute it into a named local first" >&2; \
	  exit 1; fi
	@if grep -nE '(co_await|co_yield)[^;]*\[[^]]+\]\s*(\(|\{|mutable|->)' $(SOURCES) \
	    | grep -vE '\[(&|this|&, *this)\]\s*(\(|\{|mutable|->)'; then \
	  echo "lint: a lambda with by-value captures inside a co_await/co_yield expression is" \
	       "destroyed twice by GCC 12; name it first and pass std::move(it)" >&2; \
	  exit 1; fi

# `+` runs a line outside --output-sync, its output reaching the terminal as it is written, not
# when it ends; but `+` lines run under `make -n` too: not then.
live = $(if $(findstring n,$(filter-out -%,$(firstword $(MAKEFLAGS)))),,+)

# The test binary finds jobqd, jobqctl and redis-server itself. It runs the cases two at a time,
# a process each (tests/support/parallel.hpp; TEST_ARGS='-j N' or JOBQD_TEST_JOBS), and prints a
# line per test case as it ends (live: the run takes minutes), the slowest cases, and
# `N passed, M failed` last.
test: format-check lint $(TESTS) $(JOBQD) $(JOBQCTL) test-tools $(LUA_RUN)
	$(live)@$(TESTS) $(TEST_ARGS)

# npm packages the tests run (a Dockerfile linter), into tests/tools/node_modules.
test-tools:
	@tests/tools/npm-ci tests/tools

# Live: jobqd's log reaches the terminal as it is written, not when jobqd exits.
run: $(JOBQD) $(JOBQCTL)
	@mkdir -p var/spool/files
	$(live)$(JOBQD) -c $(CONFIG)

bench: $(BENCHES)
	@bench/run $(BUILD)

# `make -s version`: what the binaries built now would report.
version:
	@echo "$(JOBQD_VERSION)"

# The image's build stage has no .git (.dockerignore): it is given the version as a build arg.
# No Docker daemon is reachable on the development machine; the tests lint the Dockerfile and
# compute its build context instead (tests/integration/test_packaging.cpp).
IMAGE ?= jobqd
image:
	docker build --build-arg JOBQD_VERSION="$(JOBQD_VERSION)" -t $(IMAGE) .

# ---- fuzzing (fuzz/README.md) ----------------------------------------------------------------
# libFuzzer targets built by clang 14 with ASan+UBSan into build-fuzz/, each linking only the
# objects it needs. `make fuzz` replays fuzz/regress/ and then runs every target FUZZ_SECONDS on
# a scratch copy of its seed corpus (two at a time with -j2); `make fuzz-job` runs one.
FUZZ_BUILD := build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_CXX ?= clang++-14
FUZZ_PACKAGES := clang-14 libclang-rt-14-dev llvm-14
FUZZ_TARGETS := job config redis_reply http_response http_request cron
# -fno-sanitize=function: clang 14 cannot emit that check's prologue data for coroutines' split
# functions (the assembler stops with "Cannot represent a difference across sections").
# fuzz/compat/source_location.hpp supplies std::source_location, which libstdc++ 12 leaves out
# for clang 14 (daemon/async/ uses it).
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize=function -fno-sanitize-recover=all
FUZZ_CXXFLAGS = -std=c++20 -O1 -g -fno-omit-frame-pointer -Wall -Wextra -Werror -MMD -MP \
  -Idaemon -I. $(PKG_CFLAGS) $(DATE_CFLAGS) -include fuzz/compat/source_location.hpp $(FUZZ_SAN) \
  -fsanitize=fuzzer-no-link
FUZZ_SRC_job := daemon/job/job.cpp daemon/job/text.cpp daemon/job/id.cpp
FUZZ_SRC_config := $(wildcard daemon/config/*.cpp)
# store/admin.cpp (the operator's layer, which checks names as the config does) and
# store/schedules.cpp (stored schedules, checked with config's cron) are no part of it.
FUZZ_SRC_redis_reply := $(filter-out daemon/store/admin%.cpp daemon/store/schedules.cpp,$(wildcard daemon/redis/*.cpp \
  daemon/store/*.cpp daemon/async/*.cpp)) $(FUZZ_BUILD)/gen/store/lua_text.cpp $(FUZZ_SRC_job) \
  daemon/config/units.cpp
FUZZ_SRC_http_response := $(wildcard daemon/async/*.cpp daemon/handlers/*.cpp) \
  $(FUZZ_SRC_config) $(FUZZ_SRC_job)
FUZZ_SRC_http_request := daemon/ops/http_request.cpp
FUZZ_SRC_cron := daemon/config/cron.cpp daemon/config/units.cpp daemon/config/suggest.cpp
fuzz_obj = $(patsubst %.cpp,$(FUZZ_BUILD)/obj/%.o,$(1))
FUZZ_BINS := $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ_TARGETS))

.PHONY: fuzz fuzz-deps $(addprefix fuzz-,$(FUZZ_TARGETS))

# Reached only when every target passed (a finding stops make with the artifact's path).
fuzz: $(addprefix fuzz-,$(FUZZ_TARGETS))
	@echo "fuzz: $(words $(FUZZ_TARGETS)) passed, 0 failed"

fuzz-deps: deps
	$(call install_missing,$(FUZZ_PACKAGES))

$(FUZZ_BUILD)/obj/%.o: %.cpp | fuzz-deps
	$(call compile,$(FUZZ_CXX) $(FUZZ_CXXFLAGS),FUZZ-CXX)

# Runs start once every binary is linked, so that none competes with the compiler for its time.
define fuzz_target
$(FUZZ_BUILD)/fuzz_$(1): $(call fuzz_obj,fuzz/fuzz_$(1).cpp $(FUZZ_SRC_$(1)))
	$$(call say,FUZZ-LINK,$$@)
	$$(Q)$$(FUZZ_CXX) -fsanitize=fuzzer $$(FUZZ_SAN) $$^ $$(PKG_LIBS) $$(DATE_LIBS) -pthread -o $$@
fuzz-$(1): $(FUZZ_BINS)
	@fuzz/run $(FUZZ_BUILD) $(1) $(FUZZ_SECONDS)
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call fuzz_target,$(t))))

# DESTDIR-aware. Without DESTDIR (a real install) the jobqd user and its directories are made at
# once with systemd-sysusers and systemd-tmpfiles, as a package's post-install would. The
# binaries go in stripped (`install -s`): debug info is most of their 49 and 23 MB, and stays in
# $(BUILD)/ for a debugger there.
SYSTEMD_DIR := $(PREFIX)/lib/systemd/system
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/jobqd $(DESTDIR)$(SYSTEMD_DIR) \
	  $(DESTDIR)$(PREFIX)/lib/sysusers.d $(DESTDIR)$(PREFIX)/lib/tmpfiles.d \
	  $(DESTDIR)$(PREFIX)/share/doc/jobqd $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
	  $(DESTDIR)$(PREFIX)/share/zsh/site-functions
	install -m 755 -s $(JOBQD) $(JOBQCTL) $(DESTDIR)$(PREFIX)/bin/
	$(JOBQCTL) --completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/jobqctl
	$(JOBQCTL) --completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_jobqctl
	[ -e $(DESTDIR)/etc/jobqd/jobqd.yaml ] || install -m 640 config/jobqd.yaml $(DESTDIR)/etc/jobqd/
	sed 's|/usr/local|$(PREFIX)|g' systemd/jobqd.service > $(DESTDIR)$(SYSTEMD_DIR)/jobqd.service
	install -m 644 systemd/jobqd.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/jobqd.conf
	install -m 644 systemd/jobqd.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/jobqd.conf
	install -m 644 README.md $(DESTDIR)$(PREFIX)/share/doc/jobqd/
	cp -r docs $(DESTDIR)$(PREFIX)/share/doc/jobqd/
	@if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then \
	  systemd-sysusers $(PREFIX)/lib/sysusers.d/jobqd.conf && \
	  systemd-tmpfiles --create $(PREFIX)/lib/tmpfiles.d/jobqd.conf && \
	  chgrp jobqd /etc/jobqd/jobqd.yaml; \
	fi

FORMAT_FILES = $(or $(shell git ls-files '*.cpp' '*.hpp' 2>/dev/null),\
  $(shell find daemon tests bench fuzz -name '*.[ch]pp' 2>/dev/null))
format:
	$(call install_missing,clang-format)
	clang-format -i $(FORMAT_FILES)

# Part of make test: the files that are not clang-format clean, one a line (clang-format's own
# report says so at every line that differs).
format-check:
	$(call install_missing,clang-format)
	@out=$$(clang-format --dry-run --Werror $(FORMAT_FILES) 2>&1) && exit 0; \
	bad=$$(grep -oE '^[^:]+:[0-9]+:[0-9]+: error: code should be clang-formatted' <<<"$$out" \
	  | cut -d: -f1 | sort -u); \
	if [ -z "$$bad" ]; then echo "format-check: clang-format failed: $$out" >&2; exit 1; fi; \
	echo "format-check: not clang-format clean (make format fixes them):" >&2; \
	printf '  %s\n' $$bad >&2; exit 1

clean:
	rm -rf build build-*

ifeq ($(JOBQD_PLAN),)
PLAN_TARGETS := $(sort $(call plan_targets,$(or $(MAKECMDGOALS),all)))
PLAN_TOTAL := $(if $(PLAN_TARGETS),$(plan_total),0)
ifneq ($(PLAN_TOTAL),0)
$(shell echo 0 >$(PROGRESS))
endif
endif

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null) $(wildcard $(BUILD)/gen/*.d)
-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)
