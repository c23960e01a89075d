// Thread-local free lists of coroutine frames, one per 64-byte size class up to 2 KiB.
#include "async/frame_pool.hpp"

namespace jq::async::frame_pool {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kEnabled = false;
#else
constexpr bool kEnabled = true;
#endif

constexpr std::size_t kGranule = 64;
constexpr std::size_t kClasses = 32;        // frames up to 2 KiB are pooled
constexpr std::size_t kMaxPerClass = 4096;  // beyond this, freed frames go back to the allocator

struct Node {
  Node* next;
};

// Trivially constructible on purpose: a thread_local with a constructor or destructor is reached
// through an initialisation guard on every access. Frames left in the lists when a thread ends
// are not returned to the allocator (only the loop thread allocates frames, and it lives as long
// as the process).
struct Pool {
  Node* head[kClasses];
  std::size_t count[kClasses];
};

thread_local constinit Pool pool{};

std::size_t class_of(std::size_t n) noexcept {
  return (n + kGranule - 1) / kGranule - 1;
}

}  // namespace

void* allocate(std::size_t n) {
  std::size_t c = class_of(n);
  if (!kEnabled || c >= kClasses) return ::operator new(n);
  if (Node* node = pool.head[c]) {
    pool.head[c] = node->next;
    --pool.count[c];
    return node;
  }
  return ::operator new((c + 1) * kGranule);
}

void release(void* p, std::size_t n) noexcept {
  std::size_t c = class_of(n);
  if (!kEnabled || c >= kClasses || pool.count[c] >= kMaxPerClass) {
    ::operator delete(p);
    return;
  }
  auto* node = static_cast<Node*>(p);
  node->next = pool.head[c];
  pool.head[c] = node;
  ++pool.count[c];
}

}  // namespace jq::async::frame_pool
