// Host-compiler shim: lets g++/clang++ compile the CUDA kernel sources in kernels/*.cu unchanged and
// run them on the CPU, one grid block after another.
//
// Every CUDA thread of a block runs on its own fiber (ucontext), so `__syncthreads()` has real barrier
// semantics: the scheduler resumes each live thread of the block until it reaches the barrier or
// returns, and only then starts the next round. `__shared__` variables become function statics, which
// is exactly "one copy per block" because blocks run one at a time. atomicAdd is a plain
// read-modify-write (there is no concurrency). Compile with -ffp-contract=off so that, like the
// kernels built with --fmad=false, no multiply-add is fused.
#pragma once

#include <math.h>
#include <ucontext.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local uint3 threadIdx = {0, 0, 0};
inline thread_local uint3 blockIdx = {0, 0, 0};
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

using std::max;
using std::min;

inline float atomicAdd(float* address, float value) {
  const float old = *address;
  *address = old + value;
  return old;
}

namespace det_shim {

constexpr std::size_t kFiberStack = 64 * 1024;

struct Fiber {
  ucontext_t context;
  std::vector<char> stack;
  bool done = false;
  unsigned int barriers = 0;
};

inline thread_local ucontext_t scheduler;
inline thread_local Fiber* current = nullptr;
inline thread_local const std::function<void()>* body = nullptr;

inline void fiber_entry() {
  (*body)();
  current->done = true;  // returning resumes `scheduler` through uc_link
}

inline void barrier() {
  if (current == nullptr) {
    throw std::logic_error("__syncthreads() called outside a kernel launch");
  }
  ++current->barriers;
  swapcontext(&current->context, &scheduler);
}

// Point `f` at the start of the kernel body again (kept out of line: getcontext returns twice).
__attribute__((noinline)) inline void reset(Fiber& f) {
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = f.stack.data();
  f.context.uc_stack.ss_size = f.stack.size();
  f.context.uc_link = &scheduler;
  f.done = false;
  f.barriers = 0;
  makecontext(&f.context, fiber_entry, 0);
}

// Run `kernel` (a callable that invokes one __global__ function) for every thread of every block.
template <class Kernel>
void launch(dim3 grid, dim3 block, Kernel&& kernel) {
  const std::function<void()> fn = kernel;
  const std::size_t num_threads = std::size_t(block.x) * block.y * block.z;
  if (num_threads == 0 || num_threads > 1024) {
    throw std::invalid_argument("block size must be 1..1024 threads");
  }
  std::vector<Fiber> fibers(num_threads);
  for (Fiber& f : fibers) {
    f.stack.resize(kFiberStack);
  }
  body = &fn;
  gridDim = grid;
  blockDim = block;
  for (unsigned int bz = 0; bz < grid.z; ++bz)
    for (unsigned int by = 0; by < grid.y; ++by)
      for (unsigned int bx = 0; bx < grid.x; ++bx) {
        blockIdx = {bx, by, bz};
        for (Fiber& f : fibers) {
          reset(f);
        }
        for (unsigned int round = 0;; ++round) {
          std::size_t alive = 0;
          for (std::size_t t = 0; t < num_threads; ++t) {
            Fiber& f = fibers[t];
            if (f.done) continue;
            current = &f;
            threadIdx = {unsigned(t % block.x), unsigned((t / block.x) % block.y),
                         unsigned(t / (std::size_t(block.x) * block.y))};
            swapcontext(&scheduler, &f.context);
            if (!f.done) ++alive;
          }
          current = nullptr;
          if (alive == 0) break;
          for (const Fiber& f : fibers) {
            if (!f.done && f.barriers != round + 1) {
              throw std::logic_error("threads of one block reached different __syncthreads() calls");
            }
          }
        }
      }
  body = nullptr;
}

}  // namespace det_shim

#define __syncthreads() det_shim::barrier()
