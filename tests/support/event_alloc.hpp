// Fault injection for libevent allocations: fail a chosen one, see whether the rest are freed.
#pragma once

#include <dlfcn.h>
#include <event2/event.h>
#include <execinfo.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_set>

namespace jq::test {

/// While one exists, libevent allocates through it (event_set_mem_functions). Between arm() and
/// disarm() it makes one chosen allocation return null, and remembers the others until they are
/// freed: live() is what was allocated while armed and is still not freed, so an error path that
/// leaks shows up without a sanitizer. The hooks
/// only wrap malloc, realloc and free, so memory allocated before or after (by the defaults)
/// frees either way. One at a time: the hooks are process-wide; destruction restores the defaults.
class EventAllocFaults {
 public:
  /// Fails the `nth` (0-based) allocation that `caller` makes itself while armed: `caller` is an
  /// exported libevent function, found right above libevent's allocator on the stack. Null
  /// `caller`: the `nth` of all allocations while armed. `nth` < 0: none fails.
  EventAllocFaults(const char* caller, long nth) {
    {
      std::lock_guard lock(state().mu);
      state().caller = caller;
      state().fail_at = nth;
    }
    event_set_mem_functions(&on_malloc, &on_realloc, &on_free);
    event_set_log_callback(&on_log);
  }
  EventAllocFaults(const EventAllocFaults&) = delete;
  EventAllocFaults& operator=(const EventAllocFaults&) = delete;
  ~EventAllocFaults() {
    event_set_mem_functions(nullptr, nullptr, nullptr);
    event_set_log_callback(nullptr);
    State& s = state();
    std::lock_guard lock(s.mu);
    s.armed = false;
    s.caller = nullptr;
    s.fail_at = -1;
    s.counted = 0;
    s.failed = false;
    s.live.clear();
  }

  void arm() { set_armed(true); }
  void disarm() { set_armed(false); }
  /// Whether the chosen allocation came (and failed).
  bool failed() const {
    std::lock_guard lock(state().mu);
    return state().failed;
  }
  /// Allocations made while armed and not freed yet.
  std::size_t live() const {
    std::lock_guard lock(state().mu);
    return state().live.size();
  }

 private:
  struct State {
    std::mutex mu;
    bool armed = false;
    const char* caller = nullptr;
    long fail_at = -1;
    long counted = 0;
    bool failed = false;
    std::unordered_set<void*> live;
  };
  // Function-local: the hooks are plain C function pointers and cannot carry a `this`.
  static State& state() {
    static State s;
    return s;
  }
  void set_armed(bool on) {
    std::lock_guard lock(state().mu);
    state().armed = on;
  }
  // Whether the allocation under way was asked for by `caller` itself: the frame right above
  // libevent's event_mm_* wrapper. Only exported functions have a name dladdr can find, and
  // that is what `caller` must be.
  static bool made_by(const char* caller) {
    void* frames[8];
    const int n = backtrace(frames, 8);
    for (int i = 0; i + 1 < n; ++i) {
      Dl_info at{};
      if (dladdr(frames[i], &at) == 0 || at.dli_sname == nullptr) continue;
      if (std::strncmp(at.dli_sname, "event_mm_", 9) != 0) continue;
      Dl_info above{};
      return dladdr(frames[i + 1], &above) != 0 && above.dli_sname != nullptr &&
             std::strcmp(above.dli_sname, caller) == 0;
    }
    return false;
  }
  // True when this allocation is the one to fail.
  static bool take_turn(State& s) {
    if (!s.armed || s.fail_at < 0) return false;
    if (s.caller != nullptr && !made_by(s.caller)) return false;
    if (s.counted++ != s.fail_at) return false;
    s.failed = true;
    return true;
  }
  static void* on_malloc(std::size_t n) {
    State& s = state();
    std::lock_guard lock(s.mu);
    if (take_turn(s)) return nullptr;
    void* p = std::malloc(n);
    if (p && s.armed) s.live.insert(p);
    return p;
  }
  static void* on_realloc(void* old, std::size_t n) {
    State& s = state();
    std::lock_guard lock(s.mu);
    if (take_turn(s)) return nullptr;  // `old` stays valid, as with a failing realloc
    void* p = std::realloc(old, n);
    if (p && (s.live.erase(old) > 0 || (s.armed && old == nullptr))) s.live.insert(p);
    return p;
  }
  // libevent's complaints while armed are about the failure made here ("calloc failed"): not
  // shown, so a passing run prints nothing. Others are printed as libevent's default would.
  static void on_log(int severity, const char* message) {
    {
      std::lock_guard lock(state().mu);
      if (state().armed) return;
    }
    static const char* names[] = {"debug", "msg", "warn", "err"};
    std::fprintf(stderr, "[%s] %s\n", severity >= 0 && severity <= 3 ? names[severity] : "?",
                 message);
  }
  static void on_free(void* p) {
    State& s = state();
    {
      std::lock_guard lock(s.mu);
      s.live.erase(p);
    }
    std::free(p);
  }
};

}  // namespace jq::test
