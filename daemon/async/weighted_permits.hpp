// WeightedPermits: one pool of permits that several competitors share, by weight or strict rank.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "async/loop.hpp"

namespace jq::async {

/// A semaphore whose waiters belong to Shares (one per competitor: a queue of a daemon), each
/// with a weight. While Shares wait, a freed permit goes to:
///  - Order::strict: the waiting Share of the highest weight (among equals, the one whose front
///    waiter came first);
///  - Order::weighted: stride scheduling. Each Share has a pass that a permit given to it
///    advances by 1/weight; the waiting Share of the smallest pass gets the next one, so Shares
///    that all wait get permits in proportion to their weights. A Share that starts waiting
///    after a quiet spell starts at the pass the last permit was granted at (the smallest of
///    those waiting then), never below: idling earns no credit.
/// Within a Share, waiters are served first come, first served, without barging: an acquire
/// passes at once only when no Share waits.
///
/// One acquire may ask for several permits (`acquire(up_to)`): it resumes with the first one
/// and takes more until it runs (grants of the same turn of the loop). A competitor that could
/// start n jobs asks for n: two permits freed in one turn can then both go where the order says,
/// not one to each Share because the first one's waiter has not run yet.
///
/// Cancellation as in Semaphore: a waiter cancelled while it waits leaves no trace; one handed
/// permits owns them (they come back through their destructors, to the next waiter), and one
/// destroyed before it resumed gives them back at once. The limit can change at run time (a
/// reload): raising it hands out permits at once, lowering it takes effect as permits come back.
/// Limit 0 means no limit: every acquire passes at once.
class WeightedPermits {
 public:
  enum class Order { weighted, strict };
  static constexpr unsigned kMaxWeight = 1000;

  class Share;
  class Grant;

  /// One permit, released when destroyed (or by release()). Move-only.
  class [[nodiscard]] Permit {
   public:
    Permit() = default;
    Permit(Permit&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)) {}
    Permit& operator=(Permit&& o) noexcept {
      if (this != &o) {
        release();
        pool_ = std::exchange(o.pool_, nullptr);
      }
      return *this;
    }
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;
    ~Permit() { release(); }
    explicit operator bool() const noexcept { return pool_ != nullptr; }
    void release() noexcept {
      if (pool_) std::exchange(pool_, nullptr)->release(1);
    }

   private:
    friend class Grant;
    explicit Permit(WeightedPermits* p) noexcept : pool_(p) {}
    WeightedPermits* pool_ = nullptr;
  };

  /// What one acquire got: one permit or more, handed out one by one (take()); those not taken
  /// go back to the pool when it is destroyed.
  class [[nodiscard]] Grant {
   public:
    Grant() = default;
    Grant(Grant&& o) noexcept
        : pool_(std::exchange(o.pool_, nullptr)), count_(std::exchange(o.count_, 0)) {}
    Grant& operator=(Grant&& o) noexcept {
      if (this != &o) {
        give_back();
        pool_ = std::exchange(o.pool_, nullptr);
        count_ = std::exchange(o.count_, 0);
      }
      return *this;
    }
    Grant(const Grant&) = delete;
    Grant& operator=(const Grant&) = delete;
    ~Grant() { give_back(); }

    std::size_t size() const noexcept { return count_; }
    /// One of the permits (empty when none is left).
    Permit take() noexcept {
      if (count_ == 0) return Permit();
      --count_;
      return Permit(pool_);
    }
    void give_back() noexcept {
      if (count_ > 0) pool_->release(std::exchange(count_, 0));
    }

   private:
    friend class Share;
    Grant(WeightedPermits* p, std::size_t n) noexcept : pool_(p), count_(n) {}
    WeightedPermits* pool_ = nullptr;
    std::size_t count_ = 0;
  };

  explicit WeightedPermits(std::size_t limit = 0, Order order = Order::weighted) noexcept
      : limit_(limit), available_(cap(limit)), order_(order) {}
  WeightedPermits(const WeightedPermits&) = delete;
  WeightedPermits& operator=(const WeightedPermits&) = delete;
  /// Its Shares and permits must be gone first (they point at it).
  ~WeightedPermits() { assert(shares_.empty() && in_use_ == 0); }

  /// 0: no limit.
  std::size_t limit() const noexcept { return limit_; }
  bool limited() const noexcept { return limit_ != 0; }
  std::size_t in_use() const noexcept { return in_use_; }
  Order order() const noexcept { return order_; }
  /// Permits asked for and not granted yet, over every Share.
  std::size_t waiting() const noexcept { return demand_; }

  /// A change starts every Share's pass afresh: under strict order passes say nothing of what
  /// was fair, and a Share strict order kept waiting must not take every permit for a while.
  void set_order(Order order) noexcept {
    if (order == order_) return;
    order_ = order;
    for (Share* s : shares_) s->pass_ = 0;
    last_pass_ = 0;
  }

  void set_limit(std::size_t limit) noexcept {
    const std::size_t was = cap(limit_), now = cap(limit);
    if (now > was) {
      // Permits still owed from an earlier cut are forgiven first.
      const std::size_t more = now - was;
      const std::size_t forgiven = std::min(more, owed_);
      owed_ -= forgiven;
      available_ += more - forgiven;
    } else {
      const std::size_t cut = was - now;
      const std::size_t at_once = std::min(cut, available_);
      available_ -= at_once;
      owed_ += cut - at_once;  // taken back from permits as they are released
    }
    limit_ = limit;
    hand_out();
  }

  /// One competitor: its weight (1..kMaxWeight), its waiters in arrival order, its pass.
  /// Registered with the pool for its lifetime; its waiters must be gone before it is (they
  /// live in coroutine frames that refer to it).
  class Share {
   public:
    Share(WeightedPermits& pool, unsigned weight) noexcept : pool_(pool) {
      set_weight(weight);
      pool_.shares_.push_back(this);
    }
    Share(const Share&) = delete;
    Share& operator=(const Share&) = delete;
    ~Share() {
      assert(waiters_.empty());
      std::erase(pool_.shares_, this);
    }

    unsigned weight() const noexcept { return weight_; }
    /// Applies from the next grant on.
    void set_weight(unsigned weight) noexcept {
      weight_ = std::clamp(weight, 1u, kMaxWeight);
      stride_ = kStrideOne / weight_;
    }
    /// Permits its waiters asked for and were not granted yet.
    std::size_t waiting() const noexcept { return demand_; }

    class [[nodiscard]] AcquireAwaiter : Waiter {
     public:
      AcquireAwaiter(Share& s, std::size_t want) noexcept
          : s_(s), want_(std::max<std::size_t>(1, want)) {}
      ~AcquireAwaiter() {
        if (linked) s_.unlink(*this);
        // Handed permits, then destroyed before it resumed (its task was aborted): give them
        // back, to the next waiter.
        if (granted_ > 0 && !resumed_) s_.pool_.release(granted_);
      }
      bool await_ready() noexcept {
        WeightedPermits& p = s_.pool_;
        // No barging: with anyone waiting, hand_out has left no permit available.
        if (p.available_ == 0 || p.demand_ > 0) return false;
        s_.start_waiting();
        while (granted_ < want_ && p.available_ > 0) {
          p.grant_one(s_);
          ++granted_;
        }
        return true;
      }
      template <HasContext P>
      bool await_suspend(std::coroutine_handle<P> h) noexcept {
        if (!h.promise().ctx->park(*this, h)) return false;
        on_cancel = [](Waiter& w) noexcept {
          auto& self = static_cast<AcquireAwaiter&>(w);
          self.s_.unlink(self);
          return true;
        };
        s_.link(*this);
        return true;
      }
      Grant await_resume() {
        resumed_ = true;
        // Woken by a first grant, it may have taken more since; it takes no more now.
        if (linked) s_.unlink(*this);
        if (granted_ == 0 && cancelled) throw Cancelled{};
        return Grant(&s_.pool_, granted_);
      }

     private:
      friend class Share;
      friend class WeightedPermits;
      Share& s_;
      std::size_t want_;
      std::size_t granted_ = 0;
      std::uint64_t seq_ = 0;  // arrival order across the pool: ties between Shares
      bool resumed_ = false;
    };

    /// Resumes with at least one permit and at most `up_to`.
    AcquireAwaiter acquire(std::size_t up_to = 1) noexcept { return AcquireAwaiter(*this, up_to); }

   private:
    friend class WeightedPermits;

    // A Share that begins to wait starts at the pass the last permit was granted at (the
    // smallest of the waiting Shares' then), unless its own is ahead: what it did not use while
    // quiet is gone, and what it is owed while it only stepped out to start what it got (a
    // queue's dispatcher between two acquires) is kept. Its own is never more than one stride
    // ahead (it was granted at most at that pass), so anything more is a counter that wrapped,
    // and it starts there too.
    void start_waiting() noexcept {
      if (demand_ > 0) return;
      const std::uint64_t base = pool_.last_pass_;
      const auto ahead = static_cast<std::int64_t>(pass_ - base);
      pass_ = base + static_cast<std::uint64_t>(
                         std::clamp<std::int64_t>(ahead, 0, static_cast<std::int64_t>(stride_)));
    }

    void link(AcquireAwaiter& a) noexcept {
      start_waiting();
      a.seq_ = pool_.next_seq_++;
      waiters_.push_back(a);
      const std::size_t more = a.want_ - a.granted_;
      demand_ += more;
      pool_.demand_ += more;
    }

    void unlink(AcquireAwaiter& a) noexcept {
      waiters_.remove(a);
      const std::size_t less = a.want_ - a.granted_;
      demand_ -= less;
      pool_.demand_ -= less;
    }

    WeightedPermits& pool_;
    unsigned weight_ = 1;
    std::uint64_t stride_ = kStrideOne;
    std::uint64_t pass_ = 0;
    std::size_t demand_ = 0;
    WaitList waiters_;  // each with permits still to take; the front one takes the next
  };

 private:
  friend class Permit;
  friend class Grant;

  // A pass advances by kStrideOne / weight per permit: exact enough for weights up to 1000, and
  // a 64-bit pass wraps only after 2^32 permits to one Share, which before() survives (passes
  // of waiting Shares are never more than a stride apart from each other's grants).
  static constexpr std::uint64_t kStrideOne = std::uint64_t{1} << 32;
  // No limit: as many permits as can never be in use.
  static constexpr std::size_t kNoLimit = static_cast<std::size_t>(-1) / 2;

  static std::size_t cap(std::size_t limit) noexcept { return limit == 0 ? kNoLimit : limit; }
  static bool before(std::uint64_t a, std::uint64_t b) noexcept {
    return static_cast<std::int64_t>(a - b) < 0;
  }
  static std::uint64_t front_seq(const Share& s) noexcept {
    return static_cast<const Share::AcquireAwaiter*>(s.waiters_.front())->seq_;
  }

  // One permit to `s`, charged to its pass.
  void grant_one(Share& s) noexcept {
    --available_;
    ++in_use_;
    last_pass_ = s.pass_;
    s.pass_ += s.stride_;
  }

  // The waiting Share the next permit goes to (nullptr when none waits).
  Share* next_share() const noexcept {
    Share* best = nullptr;
    for (Share* s : shares_) {
      if (s->demand_ == 0) continue;
      if (!best) {
        best = s;
        continue;
      }
      bool better = false;
      if (order_ == Order::strict && s->weight_ != best->weight_) {
        better = s->weight_ > best->weight_;
      } else if (order_ == Order::weighted && s->pass_ != best->pass_) {
        better = before(s->pass_, best->pass_);
      } else {
        better = front_seq(*s) < front_seq(*best);
      }
      if (better) best = s;
    }
    return best;
  }

  void hand_out() noexcept {
    while (available_ > 0 && demand_ > 0) {
      Share* s = next_share();
      auto* a = static_cast<Share::AcquireAwaiter*>(s->waiters_.front());
      grant_one(*s);
      --s->demand_;
      --demand_;
      if (++a->granted_ == 1) a->ctx->wake(*a);
      if (a->granted_ == a->want_) s->waiters_.remove(*a);
    }
  }

  void release(std::size_t n) noexcept {
    in_use_ -= n;
    const std::size_t paid = std::min(n, owed_);
    owed_ -= paid;
    available_ += n - paid;
    hand_out();
  }

  std::size_t limit_;
  std::size_t available_;
  std::size_t in_use_ = 0;
  std::size_t owed_ = 0;
  std::size_t demand_ = 0;
  Order order_;
  std::uint64_t last_pass_ = 0;  // the pass the last permit was granted at
  std::uint64_t next_seq_ = 0;
  std::vector<Share*> shares_;
};

}  // namespace jq::async
