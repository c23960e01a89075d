// A growable FIFO ring buffer: the ready queue and Queue<T>'s storage, without deque's chunking.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <utility>

namespace jq::async {

template <class T>
class Ring {
 public:
  Ring() = default;
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;
  ~Ring() {
    clear();
    ::operator delete (data_, std::align_val_t{alignof(T)});
  }

  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }

  T& front() noexcept { return data_[head_]; }

  template <class... A>
  void emplace_back(A&&... args) {
    if (size_ == cap_) grow();
    std::construct_at(&data_[(head_ + size_) & (cap_ - 1)], std::forward<A>(args)...);
    ++size_;
  }
  void push_back(T v) { emplace_back(std::move(v)); }
  void push_front(T v) {
    if (size_ == cap_) grow();
    head_ = (head_ + cap_ - 1) & (cap_ - 1);
    std::construct_at(&data_[head_], std::move(v));
    ++size_;
  }

  T pop_front() noexcept {
    T v = std::move(data_[head_]);
    std::destroy_at(&data_[head_]);
    head_ = (head_ + 1) & (cap_ - 1);
    --size_;
    return v;
  }

  void clear() noexcept {
    while (size_) (void)pop_front();
  }

 private:
  void grow() {
    std::size_t cap = cap_ ? cap_ * 2 : 16;
    T* data = static_cast<T*>(::operator new (cap * sizeof(T), std::align_val_t{alignof(T)}));
    for (std::size_t i = 0; i < size_; ++i) {
      T* src = &data_[(head_ + i) & (cap_ - 1)];
      std::construct_at(&data[i], std::move(*src));
      std::destroy_at(src);
    }
    ::operator delete (data_, std::align_val_t{alignof(T)});
    data_ = data;
    cap_ = cap;
    head_ = 0;
  }

  T* data_ = nullptr;
  std::size_t cap_ = 0;  // always a power of two (or 0)
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace jq::async
