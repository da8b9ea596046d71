#pragma once
// Counts every heap allocation of the process by interposing malloc and friends (glibc's
// __libc_* functions do the real work). Eigen allocates through malloc, operator new ends in malloc,
// so nothing escapes the count. Include in exactly one translation unit of a test binary.
// Eigen first: clang's mm_malloc.h (pulled in by Eigen's SIMD headers) redeclares posix_memalign
// without noexcept, which clang accepts only before the definition below, not after it.
#include <Eigen/Core>
#include <malloc.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace moe::testing {
inline std::atomic<long> g_allocations{0};
inline long allocations() { return g_allocations.load(); }
}  // namespace moe::testing

extern "C" {
void* malloc(std::size_t n) noexcept {
    ++moe::testing::g_allocations;
    return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t s) noexcept {
    ++moe::testing::g_allocations;
    return __libc_calloc(n, s);
}
void* realloc(void* p, std::size_t n) noexcept {
    ++moe::testing::g_allocations;
    return __libc_realloc(p, n);
}
void* memalign(std::size_t a, std::size_t n) noexcept {
    ++moe::testing::g_allocations;
    return __libc_memalign(a, n);
}
void* aligned_alloc(std::size_t a, std::size_t n) noexcept {
    ++moe::testing::g_allocations;
    return __libc_memalign(a, n);
}
int posix_memalign(void** out, std::size_t a, std::size_t n) noexcept {
    ++moe::testing::g_allocations;
    *out = __libc_memalign(a, n);
    return *out ? 0 : 12;  // ENOMEM
}
void free(void* p) noexcept { __libc_free(p); }
}
