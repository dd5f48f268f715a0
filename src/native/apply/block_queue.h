// Big reference-counted blocks and the bounded queues that carry them between the stages
// of the apply pipeline. Blocks come from a pool, so the pipeline does not page-fault
// fresh memory for every MiB.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

namespace layerstore {

// Thrown inside a stage when another stage failed: the stage stops without an error.
struct PipelineCancelled {};

struct Block {
  uint8_t* storage = nullptr;  // block_size bytes, owned by the pool
  const uint8_t* data = nullptr;
  size_t len = 0;
  // Cut short because its producer is about to wait for more input (a pipe went quiet):
  // the consumer is woken for it at once instead of when a batch has gathered.
  bool idle = false;
};
using BlockPtr = std::shared_ptr<Block>;

// The first reserve_blocks blocks are carved from one mapping made up front (its pages
// are touched only when used): no malloc, and so no mmap()/munmap() taking the address
// space lock, while the stages run and fault their pages in.
class BlockPool {
 public:
  explicit BlockPool(size_t block_size, size_t reserve_blocks = 16);
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;
  size_t block_size() const { return block_size_; }
  // A block with storage of block_size bytes, len 0; returns to the pool when released.
  BlockPtr get();

 private:
  void put(Block* b);
  size_t block_size_;
  uint8_t* slab_ = nullptr;
  size_t slab_blocks_ = 0;
  size_t carved_ = 0;
  std::mutex mu_;
  std::vector<std::unique_ptr<Block>> free_;
  std::vector<std::unique_ptr<uint8_t[]>> extra_;  // storage beyond the slab
};

// Wake-ups are batched: a producer that found the queue full sleeps until it is half
// empty, a consumer that found it empty sleeps until it is half full (or closed). On a
// busy 2-core machine every sleep costs a trip through the run queue, so the stages hand
// over bursts of blocks instead of one block per wake-up. An idle block (see Block) wakes
// the consumer on its own, so input that trickles in is still processed promptly.
class BlockQueue {
 public:
  explicit BlockQueue(size_t capacity) : capacity_(capacity < 2 ? 2 : capacity) {}
  // Blocks while full; throws PipelineCancelled after abort().
  void push(BlockPtr b);
  // False at the end (closed and drained); throws PipelineCancelled after abort().
  bool pop(BlockPtr* out);
  void close();
  void abort();

 private:
  std::mutex mu_;
  std::condition_variable not_full_;
  std::condition_variable not_empty_;
  std::deque<BlockPtr> q_;
  size_t capacity_;
  bool producer_waiting_ = false;
  bool consumer_waiting_ = false;
  size_t idle_blocks_ = 0;  // idle blocks in q_
  bool closed_ = false;
  bool aborted_ = false;
};

}  // namespace layerstore
