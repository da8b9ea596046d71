#pragma once
// The one threading primitive of the library: parallel_for over chunks fixed by the problem.
//
// Results never depend on the number of threads. Work is cut into chunks by the problem's shape
// alone, each chunk runs whole on one thread with single-threaded kernels, and whatever is summed
// over chunks is summed by the caller in chunk order. Threads only decide who runs which chunk, so
// a training run gives the same bits on 1, 2 or 16 threads (tested).
//
// Whether a loop is worth threads is decided from measurements, not a fixed cutoff: the first call
// times an empty parallel region on this machine (the fork-join cost) and a small single-threaded
// kernel (the rate of arithmetic); a loop goes parallel when its estimated time is at least
// kOverheads fork-join costs.
//
// One level of OpenMP at a time: inside a parallel region (a caller's, or ours) max_threads() is 1
// and loops run serially, so nesting never oversubscribes.
#include <algorithm>
#include <chrono>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "moe/core/types.hpp"

namespace moe {

/// Threads moe's own loops may use: omp_get_max_threads(), or 1 inside a parallel region or
/// without OpenMP. Set it as for any OpenMP program (OMP_NUM_THREADS, omp_set_num_threads).
inline int max_threads() {
#ifdef _OPENMP
    return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

namespace detail {

/// What the machine costs, measured once per process (median of repetitions).
struct ThreadCosts {
    double fork_join_ns = 2e4;  ///< an empty parallel region on max_threads() threads
    double ns_per_flop = 0.02;  ///< single-threaded float arithmetic in a vectorised loop
};

inline ThreadCosts measure_thread_costs() {
    using Clock = std::chrono::steady_clock;
    ThreadCosts c;
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
#ifdef _OPENMP
    const int threads = omp_get_max_threads();
    if (threads > 1) {
        std::vector<double> t;
        volatile int sink = 0;
        for (int rep = 0; rep < 15; ++rep) {
            const auto start = Clock::now();
#pragma omp parallel num_threads(threads)
            { sink = sink + 1; }
            t.push_back(std::chrono::duration<double, std::nano>(Clock::now() - start).count());
        }
        c.fork_join_ns = median(t);
    }
#endif
    // A multiply-add loop the compiler vectorises, as our elementwise passes are.
    std::vector<float> a(4096, 1.0f), b(4096, 0.5f);
    std::vector<double> t;
    for (int rep = 0; rep < 9; ++rep) {
        const auto start = Clock::now();
        for (int r = 0; r < 8; ++r)
            for (std::size_t i = 0; i < a.size(); ++i) a[i] = a[i] * 0.999f + b[i];
        t.push_back(std::chrono::duration<double, std::nano>(Clock::now() - start).count() / (2.0 * 8 * 4096));
    }
    volatile float keep = a[7];
    (void)keep;
    c.ns_per_flop = std::max(1e-4, median(t));
    return c;
}

inline const ThreadCosts& thread_costs() {
    static const ThreadCosts costs = measure_thread_costs();
    return costs;
}

/// A loop is worth threads when its estimated time is at least this many fork-join costs.
constexpr double kOverheads = 4.0;

/// For tests: when true, every loop of more than one chunk runs on the threads whatever its size,
/// so that the small models of a test take the threaded paths (the determinism test).
inline bool& always_parallel() {
    static bool on = false;
    return on;
}

/// Threads worth using for `flops` floating-point operations spread over `chunks` chunks.
inline int threads_for(double flops, Index chunks) {
    const int threads = max_threads();
    if (threads <= 1 || chunks <= 1) return 1;
    if (always_parallel()) return static_cast<int>(std::min<Index>(threads, chunks));
    const ThreadCosts& c = thread_costs();
    if (flops * c.ns_per_flop < kOverheads * c.fork_join_ns) return 1;
    return static_cast<int>(std::min<Index>(threads, chunks));
}
}  // namespace detail

/// Runs body(begin, end) for every chunk [c grain, min(n, (c + 1) grain)) of [0, n), over the
/// threads when `flops` (the whole loop's arithmetic, an estimate) pays for them. Each chunk runs
/// whole on one thread; the chunks depend on n and grain only, never on the thread count.
template <class F>
void parallel_for(Index n, Index grain, double flops, F&& body) {
    if (n <= 0) return;
    grain = std::max<Index>(1, grain);
    const Index chunks = (n + grain - 1) / grain;
    const int threads = detail::threads_for(flops, chunks);
#ifdef _OPENMP
    if (threads > 1) {
        // Every region gets the whole team and the first `threads` of it share the chunks in
        // contiguous ranges (as schedule(static)). libgomp reuses its last team only for a region of
        // the same size: with 3 or more threads, regions of 2 and 3 alternated and each allocated a
        // team (60 allocations in 5 steps of a small MLP on 3 threads).
#pragma omp parallel num_threads(omp_get_max_threads())
        {
            const Index workers = std::min<Index>(threads, omp_get_num_threads()), t = omp_get_thread_num();
            if (t < workers) {
                const Index per = chunks / workers, extra = chunks % workers;
                const Index first = t * per + std::min(t, extra), last = first + per + (t < extra ? 1 : 0);
                for (Index c = first; c < last; ++c) body(c * grain, std::min(n, (c + 1) * grain));
            }
        }
        return;
    }
#endif
    (void)threads;
    for (Index c = 0; c < chunks; ++c) body(c * grain, std::min(n, (c + 1) * grain));
}

namespace detail {
/// Samples per chunk of the per-sample loops (gated sums, softmax, top-k, gathers).
constexpr Index kSampleChunk = 32;
/// What an elementwise pass over a batch costs per element, in arithmetic operations, for the
/// threading decision: the passes stream memory, so an element costs more than one multiply-add.
constexpr double kElementwiseFlops = 4.0;

/// body(begin, end) over [0, n) cut into one contiguous range per thread (multiples of 16), for
/// passes whose every element is computed alone or summed in a fixed order inside one range
/// (activations, bias broadcasts, per-feature sums over the batch): there the cut changes which
/// thread computes an element, never its bits, so it may follow the thread count, and one thread
/// runs the whole range as one streaming loop.
template <class F>
void for_each_range(Index n, double flops, F&& body) {
    if (n <= 0) return;
    const int threads = threads_for(flops, (n + 15) / 16);
    if (threads <= 1) {
        body(Index(0), n);
        return;
    }
    const Index per = ((n + threads - 1) / threads + 15) / 16 * 16;
    parallel_for(n, per, flops, body);
}
/// f(b) for every sample b of [0, batch), in chunks of kSampleChunk over the threads when the
/// arithmetic (flops_per_sample * batch) pays. f may write per-sample state without synchronisation.
template <class F>
void for_each_sample(Index batch, double flops_per_sample, F&& f) {
    parallel_for(batch, kSampleChunk, flops_per_sample * double(batch), [&](Index begin, Index end) {
        for (Index b = begin; b < end; ++b) f(b);
    });
}
}  // namespace detail

/// parallel_for with one item per chunk: body(i) for i in [0, n), each thread a contiguous share
/// (neighbouring GEMM tiles share operands: 2% faster than parallel_for_each_in_turn for the
/// experts of a SparseMoE).
template <class F>
void parallel_for_each(Index n, double flops, F&& body) {
    parallel_for(n, 1, flops, [&](Index begin, Index end) {
        for (Index i = begin; i < end; ++i) body(i);
    });
}

/// body(i) for i in [0, n) with the items dealt to the threads in turn (thread w runs items w,
/// w + T, w + 2T, ...), for items whose costs come in runs: the depth chunks of weight-gradient
/// products, listed product after product. A tower's two large chunks (its 128 x 64 layer) and its
/// head's two tiny ones went to one thread each as contiguous shares, and its backward was 1.3x
/// faster on two threads instead of 1.8x. Not a work queue: the thread of an item depends on n
/// and the thread count only, never on timing, or a thread could first touch its workspaces (and
/// allocate) at any later step (a queue did, on 3 threads, in every run of the allocation test).
template <class F>
void parallel_for_each_in_turn(Index n, double flops, F&& body) {
    // One chunk per worker: parallel_for makes the same threading decision for `threads` chunks,
    // and with one thread (or none worth it) the single chunk runs every item in order.
    const Index threads = detail::threads_for(flops, n);
    parallel_for(threads, 1, flops, [&](Index w, Index) {
        for (Index i = w; i < n; i += threads) body(i);
    });
}

}  // namespace moe
