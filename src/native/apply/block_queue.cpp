#include "apply/block_queue.h"

#include <utility>

namespace layerstore {

BlockPtr BlockPool::get() {
  Block* b = nullptr;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!free_.empty()) {
      b = free_.back().release();
      free_.pop_back();
    }
  }
  if (b == nullptr) {
    b = new Block;
    b->storage.resize(block_size_);
  }
  b->data = b->storage.data();
  b->len = 0;
  b->idle = false;
  return BlockPtr(b, [this](Block* x) { put(x); });
}

void BlockPool::put(Block* b) {
  std::lock_guard<std::mutex> lk(mu_);
  free_.emplace_back(b);
}

void BlockQueue::push(BlockPtr b) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!aborted_ && q_.size() >= capacity_) {
    producer_waiting_ = true;
    not_full_.wait(lk, [&] { return aborted_ || q_.size() <= capacity_ / 2; });
    producer_waiting_ = false;
  }
  if (aborted_) throw PipelineCancelled{};
  const bool idle = b->idle;
  if (idle) ++idle_blocks_;
  q_.push_back(std::move(b));
  if (consumer_waiting_ && (idle || q_.size() >= capacity_ / 2)) not_empty_.notify_one();
}

bool BlockQueue::pop(BlockPtr* out) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!aborted_ && !closed_ && q_.empty()) {
    consumer_waiting_ = true;
    not_empty_.wait(lk, [&] {
      return aborted_ || closed_ || idle_blocks_ > 0 || q_.size() >= capacity_ / 2;
    });
    consumer_waiting_ = false;
  }
  if (aborted_) throw PipelineCancelled{};
  if (q_.empty()) return false;
  *out = std::move(q_.front());
  q_.pop_front();
  if ((*out)->idle) --idle_blocks_;
  if (producer_waiting_ && q_.size() <= capacity_ / 2) not_full_.notify_one();
  return true;
}

void BlockQueue::close() {
  std::lock_guard<std::mutex> lk(mu_);
  closed_ = true;
  not_empty_.notify_all();
}

void BlockQueue::abort() {
  std::lock_guard<std::mutex> lk(mu_);
  aborted_ = true;
  q_.clear();
  idle_blocks_ = 0;
  not_full_.notify_all();
  not_empty_.notify_all();
}

}  // namespace layerstore
