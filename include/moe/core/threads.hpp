#pragma once
// Threading policy: one level of OpenMP at a time. moe's kernels ask max_threads() how many threads
// they may use; inside a parallel region (a caller's, or ours over experts) the answer is 1.
#ifdef _OPENMP
#include <omp.h>
#endif

#include "moe/core/types.hpp"

namespace moe {

namespace detail {
/// Multiply-adds below which a kernel stays on one thread. Measured on 2 Zen 5 cores: a 256 x 256 x 32
/// product (2M) and the experts' first layer at batch 32 (4M) are slower on two threads than on
/// one; 256 x 256 x 256 (17M) is 1.3x faster.
constexpr double kParallelWork = 8.0e6;
}  // namespace detail

/// Threads moe's own kernels may use: omp_get_max_threads(), or 1 inside a parallel region or
/// without OpenMP. Set it as for any OpenMP program (OMP_NUM_THREADS, omp_set_num_threads).
inline int max_threads() {
#ifdef _OPENMP
    return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

namespace detail {
/// Runs f(b) for b in [0, batch), over the threads when the total work (multiply-adds) pays for it.
/// Each index runs on one thread: f may write per-index state without synchronisation.
template <class F>
void for_each_sample(Index batch, double work_per_sample, F&& f) {
#ifdef _OPENMP
    const int threads = max_threads();
    if (threads > 1 && work_per_sample * double(batch) >= kParallelWork) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (Index b = 0; b < batch; ++b) f(b);
        return;
    }
#endif
    (void)work_per_sample;
    for (Index b = 0; b < batch; ++b) f(b);
}
}  // namespace detail

}  // namespace moe
