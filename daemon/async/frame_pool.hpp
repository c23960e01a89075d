// Recycles coroutine frames per size class: spawn+await and per-job tasks without malloc each time.
#pragma once

#include <cstddef>
#include <new>

namespace jq::async {

namespace frame_pool {
void* allocate(std::size_t n);
void release(void* p, std::size_t n) noexcept;
}  // namespace frame_pool

/// Base of every promise type: gives the coroutine frame the pooled operator new/delete. Frames are
/// small and short-lived (a job's handler call, a gather child), so a thread-local free list per
/// 64-byte size class saves the allocator round trip. Disabled under sanitizers so ASan still sees
/// every use-after-free.
struct FramePooled {
  static void* operator new(std::size_t n) { return frame_pool::allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { frame_pool::release(p, n); }
};

}  // namespace jq::async
