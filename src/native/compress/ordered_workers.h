// Jobs run on worker threads and come back in the order they were submitted: the shape
// of pigz-style parallel gzip (compress.cpp) and of multi-threaded tar-split assembly
// (tarsplit/assembler.cpp). The submitting thread owns the order; workers only run jobs.
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace layerstore {

template <class Job>
class OrderedWorkers {
 public:
  // Starts `workers` threads. On each, make_runner() is called once; what it returns is
  // called with every job that thread takes (so a runner may keep per-thread state).
  template <class MakeRunner>
  OrderedWorkers(unsigned workers, MakeRunner make_runner) {
    for (unsigned i = 0; i < workers; ++i)
      threads_.emplace_back([this, make_runner] {
        auto run = make_runner();
        work(run);
      });
  }
  ~OrderedWorkers() { stop(); }
  OrderedWorkers(const OrderedWorkers&) = delete;
  OrderedWorkers& operator=(const OrderedWorkers&) = delete;

  // Submitting thread only, from here to take_front().
  void submit(std::shared_ptr<Job> job) {
    auto e = std::make_shared<Entry>();
    e->job = std::move(job);
    {
      std::lock_guard<std::mutex> g(mu_);
      queue_.push_back(e);
    }
    order_.push_back(std::move(e));
    cv_work_.notify_one();
  }
  // Jobs submitted and not taken back yet.
  size_t pending() const { return order_.size(); }
  // Whether the oldest pending job (there must be one) has run.
  bool front_done() {
    std::lock_guard<std::mutex> g(mu_);
    return order_.front()->done;
  }
  // Waits for the oldest pending job (there must be one) and hands it back; what it threw
  // is rethrown here.
  std::shared_ptr<Job> take_front() {
    std::shared_ptr<Entry> e = std::move(order_.front());
    order_.pop_front();
    {
      std::unique_lock<std::mutex> g(mu_);
      cv_done_.wait(g, [&] { return e->done; });
    }
    if (e->err) std::rethrow_exception(e->err);
    return std::move(e->job);
  }
  // Drops the jobs no worker has started and joins the threads. Idempotent.
  void stop() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stopping_ = true;
      queue_.clear();
    }
    cv_work_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  struct Entry {
    std::shared_ptr<Job> job;
    std::exception_ptr err;
    bool done = false;  // guarded by mu_
  };

  template <class Run>
  void work(Run& run) {
    for (;;) {
      std::shared_ptr<Entry> e;
      {
        std::unique_lock<std::mutex> g(mu_);
        cv_work_.wait(g, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        e = std::move(queue_.front());
        queue_.pop_front();
      }
      try {
        run(*e->job);
      } catch (...) {
        e->err = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> g(mu_);
        e->done = true;
      }
      cv_done_.notify_all();
    }
  }

  std::deque<std::shared_ptr<Entry>> order_;  // submitting thread only
  std::deque<std::shared_ptr<Entry>> queue_;  // guarded by mu_: not started yet
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  std::vector<std::thread> threads_;
  bool stopping_ = false;
};

}  // namespace layerstore
