#include "apply/block_queue.h"

#include <sys/mman.h>

#include <algorithm>
#include <utility>

namespace layerstore {

BlockPool::BlockPool(size_t block_size, size_t reserve_blocks) : block_size_(block_size) {
  constexpr size_t kMaxSlab = 64 << 20;  // address space, not memory: pages come on use
  reserve_blocks = std::min(reserve_blocks, kMaxSlab / std::max<size_t>(block_size, 1));
  if (reserve_blocks == 0) return;
  void* p = mmap(nullptr, block_size * reserve_blocks, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return;  // every block then comes from the heap
  slab_ = static_cast<uint8_t*>(p);
  slab_blocks_ = reserve_blocks;
}

BlockPool::~BlockPool() {
  if (slab_ != nullptr) munmap(slab_, block_size_ * slab_blocks_);
}

BlockPtr BlockPool::get() {
  Block* b = nullptr;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!free_.empty()) {
      b = free_.back().release();
      free_.pop_back();
    } else if (carved_ < slab_blocks_) {
      b = new Block;
      b->storage = slab_ + block_size_ * carved_++;
    }
  }
  if (b == nullptr) {
    std::unique_ptr<uint8_t[]> mem(new uint8_t[block_size_]);
    b = new Block;
    b->storage = mem.get();
    std::lock_guard<std::mutex> lk(mu_);
    extra_.push_back(std::move(mem));
  }
  b->data = b->storage;
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
