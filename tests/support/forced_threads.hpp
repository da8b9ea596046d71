#pragma once
// ForcedThreads: a test's thread count, with every parallel loop of more than one chunk threaded.
#ifdef _OPENMP
#include <omp.h>

#include <moe/core/threads.hpp>

namespace moe::testing {

/// For its lifetime: `threads` OpenMP threads and every loop of more than one chunk threaded
/// (restored on the way out, also when the test throws).
class ForcedThreads {
public:
    explicit ForcedThreads(int threads) : saved_(omp_get_max_threads()) {
        omp_set_num_threads(threads);
        detail::always_parallel() = true;
    }
    ~ForcedThreads() {
        detail::always_parallel() = false;
        omp_set_num_threads(saved_);
    }
    ForcedThreads(const ForcedThreads&) = delete;
    ForcedThreads& operator=(const ForcedThreads&) = delete;

private:
    int saved_;
};

}  // namespace moe::testing
#endif
