#pragma once
// Memory for embedding tables and their optimizer state: large matrices read and written at random
// columns (one column per id). With 4 KiB pages nearly every id of a table of millions of rows
// costs a TLB miss and a page walk; in 2 MiB pages the page walks mostly hit the cache, and a step
// costs about the same whatever the table's size. So, on Linux, such matrices ask for transparent
// huge pages (madvise MADV_HUGEPAGE) before they are first touched. Elsewhere, or where the
// kernel's setting is "never", this is a plain allocation: the advice changes speed, never results.
#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "moe/core/types.hpp"

namespace moe::detail {

/// Advises the kernel to back [data, data + bytes) with huge pages; only blocks of 4 MiB or more,
/// where a 2 MiB page fits inside whatever the alignment. Best effort: a refusal is ignored.
inline void advise_huge_pages(void* data, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    constexpr std::uintptr_t kPage = 4096;
    if (bytes < (std::size_t(4) << 20)) return;
    const auto begin = (reinterpret_cast<std::uintptr_t>(data) + kPage - 1) & ~(kPage - 1);
    const auto end = (reinterpret_cast<std::uintptr_t>(data) + bytes) & ~(kPage - 1);
    if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
    (void)data;
    (void)bytes;
#endif
}

/// A rows x cols matrix filled with `value`, in huge pages where the system gives them (see above).
template <class T>
Matrix<T> table_matrix(Index rows, Index cols, T value) {
    Matrix<T> m(rows, cols);  // allocated, not yet touched: the advice comes before the first write
    advise_huge_pages(m.data(), std::size_t(m.size()) * sizeof(T));
    m.setConstant(value);
    return m;
}

/// Asks for the cache lines of n values at p ahead of their use (a table's row some ids ahead in
/// a gather or an optimizer step, whose address the hardware prefetchers cannot guess). A hint:
/// nothing on compilers without __builtin_prefetch.
template <class T>
inline void prefetch_values(const T* p, Index n) {
#if defined(__GNUC__) || defined(__clang__)
    const char* bytes = reinterpret_cast<const char*>(p);
    for (std::size_t off = 0; off < std::size_t(n) * sizeof(T); off += 64) __builtin_prefetch(bytes + off);
#else
    (void)p;
    (void)n;
#endif
}

/// How many ids ahead prefetch_values asks for a row: enough to cover a memory access in the
/// time of a few rows' work.
constexpr std::size_t kPrefetchAhead = 8;

}  // namespace moe::detail
