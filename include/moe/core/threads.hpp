#pragma once
// Threading policy: one level of OpenMP at a time. moe's kernels ask max_threads() how many threads
// they may use; inside a parallel region (a caller's, or ours over experts) the answer is 1.
#ifdef _OPENMP
#include <omp.h>
#endif

namespace moe {

/// Threads moe's own kernels may use: omp_get_max_threads(), or 1 inside a parallel region or
/// without OpenMP. Set it as for any OpenMP program (OMP_NUM_THREADS, omp_set_num_threads).
inline int max_threads() {
#ifdef _OPENMP
    return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

}  // namespace moe
