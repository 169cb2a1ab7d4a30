// ThreadPool: persistent workers that spin briefly, then sleep on a condition variable.
//
// One ParallelFor is a "job": n split into chunks (multiples of grain), claimed one at a time by
// the caller and by the workers through one atomic word that holds the job generation, the chunk
// count and the next chunk. Claiming is a compare-and-swap on that word, so a worker that wakes
// late and still holds an old generation can never claim a chunk of a newer job, and the caller
// never waits for workers that find nothing to do: it returns once every chunk has been run. Decode
// loops call this millions of times, so the common path takes no lock: workers that are still
// spinning see the new generation without a notify, and the condition variable is touched only when
// some worker sleeps.
#include "kernels/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace qat::kernels {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// How long an idle worker spins for the next job before it sleeps, and how long the caller spins
// for the last chunks before it yields its core. Long enough to bridge the small serial work
// between the kernels of a decode step, short enough not to steal a shared core for long.
constexpr auto kWorkerSpin = std::chrono::microseconds(100);
constexpr auto kCallerSpin = std::chrono::microseconds(200);

// True while a thread runs chunks of a job (on the workers always, on a caller during its
// ParallelFor): a ParallelFor called from inside fn runs inline instead of waiting for a pool that
// is busy with the outer job (which would deadlock).
thread_local bool tls_in_pool = false;

// The claim word: bits 63..32 job generation, 31..16 number of chunks, 15..0 next chunk. Keeping
// the chunk count in the word lets a thread decide "nothing left" without reading job fields that
// the next job may be overwriting.
constexpr uint32_t kMaxChunks = 0xFFFF;
constexpr uint64_t ClaimWord(uint32_t generation, uint32_t total) {
  return (static_cast<uint64_t>(generation) << 32) | (static_cast<uint64_t>(total) << 16);
}
constexpr uint32_t ClaimGeneration(uint64_t word) { return static_cast<uint32_t>(word >> 32); }
constexpr uint32_t ClaimTotal(uint64_t word) { return static_cast<uint32_t>(word >> 16) & 0xFFFF; }
constexpr uint32_t ClaimNext(uint64_t word) { return static_cast<uint32_t>(word) & 0xFFFF; }

}  // namespace

struct ThreadPool::Impl {
  int size = 1;
  std::vector<std::thread> workers;

  // Serializes ParallelFor calls from different threads (one job at a time).
  std::mutex call_mutex;

  // The current job. Its fields are written by the caller before the release store that publishes
  // the new generation, and read by a thread only after it claimed a chunk of that generation.
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int64_t chunk_size = 0;
  std::atomic<uint64_t> claim{0};  // see ClaimWord
  std::atomic<uint32_t> chunks_done{0};

  // Sleeping and waking.
  std::atomic<uint32_t> generation{0};
  std::atomic<int> sleepers{0};
  std::atomic<bool> stop{false};
  std::mutex sleep_mutex;
  std::condition_variable wake;

  // Runs chunks of job `gen` until none is left (or a newer job replaced it). The job's fields are
  // read only after a chunk was claimed: the job cannot finish, and so cannot be replaced, while
  // one of its chunks is claimed but not done.
  void RunChunks(uint32_t gen) {
    uint64_t word = claim.load(std::memory_order_acquire);
    while (true) {
      if (ClaimGeneration(word) != gen) return;
      if (ClaimNext(word) >= ClaimTotal(word)) return;
      if (!claim.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        continue;  // word was reloaded
      }
      const int64_t begin = static_cast<int64_t>(ClaimNext(word)) * chunk_size;
      const int64_t end = std::min(n, begin + chunk_size);
      (*fn)(begin, end);
      chunks_done.fetch_add(1, std::memory_order_acq_rel);
      word = claim.load(std::memory_order_acquire);
    }
  }

  void WorkerLoop() {
    tls_in_pool = true;
    // Generation 0 is "no job yet" (the constructor publishes none); reading the generation here
    // instead would skip a job published before this thread got to run.
    uint32_t seen = 0;
    while (true) {
      // Spin for a new generation, then sleep.
      uint32_t gen = generation.load(std::memory_order_acquire);
      const auto spin_until = std::chrono::steady_clock::now() + kWorkerSpin;
      for (int i = 0; gen == seen && !stop.load(std::memory_order_relaxed); ++i) {
        CpuRelax();
        if ((i & 63) == 63 && std::chrono::steady_clock::now() > spin_until) {
          std::unique_lock<std::mutex> lock(sleep_mutex);
          sleepers.fetch_add(1, std::memory_order_seq_cst);
          wake.wait(lock, [&] {
            return generation.load(std::memory_order_seq_cst) != seen ||
                   stop.load(std::memory_order_seq_cst);
          });
          sleepers.fetch_sub(1, std::memory_order_relaxed);
        }
        gen = generation.load(std::memory_order_acquire);
      }
      if (stop.load(std::memory_order_acquire)) return;
      seen = gen;
      RunChunks(gen);
    }
  }
};

ThreadPool::ThreadPool(int threads) : impl_(new Impl) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  impl_->size = threads;
  impl_->workers.reserve(threads - 1);
  for (int i = 1; i < threads; ++i) impl_->workers.emplace_back([this] { impl_->WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->sleep_mutex);
    impl_->stop.store(true, std::memory_order_seq_cst);
  }
  impl_->wake.notify_all();
  for (std::thread& t : impl_->workers) t.join();
  delete impl_;
}

int ThreadPool::size() const { return impl_->size; }

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t units = (n + grain - 1) / grain;
  if (impl_->size == 1 || units == 1 || tls_in_pool) {
    fn(0, n);
    return;
  }
  // A few chunks per thread, so a thread that was descheduled (cores are shared) holds up little.
  const int64_t target_chunks =
      std::min<int64_t>({units, int64_t{4} * impl_->size, int64_t{kMaxChunks}});
  const int64_t chunk_size = (units + target_chunks - 1) / target_chunks * grain;
  const uint32_t num_chunks = static_cast<uint32_t>((n + chunk_size - 1) / chunk_size);

  std::lock_guard<std::mutex> call_lock(impl_->call_mutex);
  Impl& s = *impl_;
  const uint32_t gen = s.generation.load(std::memory_order_relaxed) + 1;
  s.fn = &fn;
  s.n = n;
  s.chunk_size = chunk_size;
  s.chunks_done.store(0, std::memory_order_relaxed);
  s.claim.store(ClaimWord(gen, num_chunks), std::memory_order_release);
  s.generation.store(gen, std::memory_order_seq_cst);
  if (s.sleepers.load(std::memory_order_seq_cst) > 0) {
    // Taking the lock orders this against a worker between its check and its wait.
    { std::lock_guard<std::mutex> lock(s.sleep_mutex); }
    s.wake.notify_all();
  }

  tls_in_pool = true;
  s.RunChunks(gen);
  tls_in_pool = false;
  const auto spin_until = std::chrono::steady_clock::now() + kCallerSpin;
  for (int i = 0; s.chunks_done.load(std::memory_order_acquire) != num_chunks; ++i) {
    if (i < 64 || std::chrono::steady_clock::now() < spin_until) {
      CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace qat::kernels
