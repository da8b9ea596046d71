#pragma once
// Matrix products that allocate nothing in steady state.
//
// Eigen's `C.noalias() = A * B` allocates its packing buffers on every call once they exceed
// EIGEN_STACK_ALLOCATION_LIMIT, and its OpenMP path allocates them always. Page faults are costly
// on the machines we target, and our contract is "no allocation after the first step", so moe calls
// Eigen's own GEMM kernel (general_matrix_matrix_product, Eigen 3.4) with packing buffers that live
// in a grow-only per-thread arena. Threads split the output between them (columns or rows,
// whichever is larger); each element is computed by one thread, so a fixed thread count gives the
// same bits every run.
//
// This uses Eigen's internal API; it is pinned to Eigen 3.4 by the static_assert below, and
// MOE_EIGEN_GEMM=0 switches back to the public (allocating) products for another Eigen.
#include <algorithm>
#include <cstdint>
#include <vector>

#include <Eigen/Core>

#include "moe/core/threads.hpp"
#include "moe/core/types.hpp"

#ifndef MOE_EIGEN_GEMM
#if EIGEN_WORLD_VERSION == 3 && EIGEN_MAJOR_VERSION == 4
#define MOE_EIGEN_GEMM 1
#else
#define MOE_EIGEN_GEMM 0
#endif
#endif

namespace moe {

namespace detail {

#if MOE_EIGEN_GEMM
template <class T>
class ArenaBlocking : public Eigen::internal::level3_blocking<T, T> {
public:
    ArenaBlocking(T* a, T* b, Index mc, Index nc, Index kc) {
        this->m_blockA = a;
        this->m_blockB = b;
        this->m_mc = mc;
        this->m_nc = nc;
        this->m_kc = kc;
    }
};

/// Per-thread packing memory, grown to the largest product seen.
template <class T>
std::vector<T>& gemm_arena() {
    thread_local std::vector<T> arena;
    return arena;
}

template <class T, int LhsOrder, int RhsOrder>
void gemm_kernel(Index m, Index n, Index k, const T* a, Index lda, const T* b, Index ldb, T* c, Index ldc, T alpha) {
    Index kc = k, mc = m, nc = n;
    Eigen::internal::computeProductBlockingSizes<T, T, 1>(kc, mc, nc, Index(1));
    // Packing writes whole SIMD panels: leave headroom past mc*kc and kc*nc.
    const Index pad = 64;
    const Index size_a = mc * kc + pad, size_b = kc * nc + pad;
    auto& arena = gemm_arena<T>();
    if (static_cast<Index>(arena.size()) < size_a + size_b + 2 * pad) arena.resize(static_cast<std::size_t>(size_a + size_b + 2 * pad));
    // 64-byte alignment for AVX-512 loads of the packed panels.
    T* base = arena.data();
    auto align = [](T* p) {
        const auto u = reinterpret_cast<std::uintptr_t>(p);
        return reinterpret_cast<T*>((u + 63) & ~std::uintptr_t(63));
    };
    T* block_a = align(base);
    T* block_b = align(block_a + size_a);
    ArenaBlocking<T> blocking(block_a, block_b, mc, nc, kc);
    Eigen::internal::general_matrix_matrix_product<Index, T, LhsOrder, false, T, RhsOrder, false, Eigen::ColMajor, 1>::run(
        m, n, k, a, lda, b, ldb, c, 1, ldc, alpha, blocking, nullptr);
}
#endif

/// C = alpha op(A) op(B) + (accumulate ? C : 0), all column-major with leading dimensions.
/// op(A) is m x k, op(B) is k x n, C is m x n. Single-threaded.
template <class T>
void gemm_serial(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda, const T* b,
                 Index ldb, bool accumulate, T* c, Index ldc) {
    using Stride = Eigen::OuterStride<>;
    Eigen::Map<Matrix<T>, 0, Stride> cm(c, m, n, Stride(ldc));
    if (!accumulate) cm.setZero();
    if (m == 0 || n == 0 || k == 0) return;
#if MOE_EIGEN_GEMM
    // Tiny products: Eigen's coefficient-based path is faster and allocates nothing.
    if (m + n + k >= 20) {
        constexpr int C = Eigen::ColMajor, R = Eigen::RowMajor;
        if (!trans_a && !trans_b) gemm_kernel<T, C, C>(m, n, k, a, lda, b, ldb, c, ldc, alpha);
        else if (!trans_a && trans_b) gemm_kernel<T, C, R>(m, n, k, a, lda, b, ldb, c, ldc, alpha);
        else if (trans_a && !trans_b) gemm_kernel<T, R, C>(m, n, k, a, lda, b, ldb, c, ldc, alpha);
        else gemm_kernel<T, R, R>(m, n, k, a, lda, b, ldb, c, ldc, alpha);
        return;
    }
#endif
    Eigen::Map<const Matrix<T>, 0, Stride> am(a, trans_a ? k : m, trans_a ? m : k, Stride(lda));
    Eigen::Map<const Matrix<T>, 0, Stride> bm(b, trans_b ? n : k, trans_b ? k : n, Stride(ldb));
    if (!trans_a && !trans_b) cm.noalias() += alpha * am * bm;
    else if (!trans_a && trans_b) cm.noalias() += alpha * am * bm.transpose();
    else if (trans_a && !trans_b) cm.noalias() += alpha * am.transpose() * bm;
    else cm.noalias() += alpha * am.transpose() * bm.transpose();
}

/// As gemm_serial, split over up to `threads` OpenMP threads when the product is large enough.
template <class T>
void gemm(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda, const T* b, Index ldb,
          bool accumulate, T* c, Index ldc, int threads = max_threads()) {
    const double work = double(m) * double(n) * double(k);
    if (threads <= 1 || work < kParallelWork) {
        gemm_serial(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, accumulate, c, ldc);
        return;
    }
#ifdef _OPENMP
    const bool split_cols = n >= m;
    const Index extent = split_cols ? n : m;
    const Index quantum = split_cols ? 4 : 16;  // keep the parts whole kernel panels
    const int parts = static_cast<int>(std::min<Index>(threads, std::max<Index>(1, extent / quantum)));
#pragma omp parallel for num_threads(parts) schedule(static)
    for (int p = 0; p < parts; ++p) {
        Index begin = extent * p / parts, end = extent * (p + 1) / parts;
        begin -= begin % quantum;
        if (p + 1 < parts) end -= end % quantum;
        else end = extent;
        if (end <= begin) continue;
        const Index len = end - begin;
        if (split_cols) {
            const T* bp = trans_b ? b + begin : b + begin * ldb;
            gemm_serial(trans_a, trans_b, m, len, k, alpha, a, lda, bp, ldb, accumulate, c + begin * ldc, ldc);
        } else {
            const T* ap = trans_a ? a + begin * lda : a + begin;
            gemm_serial(trans_a, trans_b, len, n, k, alpha, ap, lda, b, ldb, accumulate, c + begin, ldc);
        }
    }
#else
    gemm_serial(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, accumulate, c, ldc);
#endif
}

/// Eigen-friendly front: C (+)= alpha op(A) op(B) for column-major matrices or views with direct access.
template <class T, class CM, class AM, class BM>
void matmul(CM& c, const AM& a, bool trans_a, const BM& b, bool trans_b, bool accumulate = false, T alpha = T(1)) {
    const Index m = trans_a ? a.cols() : a.rows();
    const Index k = trans_a ? a.rows() : a.cols();
    const Index n = trans_b ? b.rows() : b.cols();
    eigen_assert(c.rows() == m && c.cols() == n && (trans_b ? b.cols() : b.rows()) == k);
    gemm<T>(trans_a, trans_b, m, n, k, alpha, a.data(), a.outerStride(), b.data(), b.outerStride(), accumulate, c.data(),
            c.outerStride());
}

}  // namespace detail
}  // namespace moe
