#pragma once
// Matrix products through one interface: C (+)= alpha op(A) op(B) on column-major memory with
// leading dimensions, with two backends chosen at compile time, tiled over threads the same way.
//
//   Eigen (the default): Eigen's public product on tiles of at most 32 x 128 (output) by 256 (depth).
//        Types whose maximum sizes are fixed at compile time make Eigen keep its packing buffers in
//        fixed arrays (nothing allocated, ever) and never start threads of its own (it threads only
//        products with more than 32 rows): the library builds against any Eigen 3.4.x and allocates
//        nothing in steady state. Measured on Zen 5, these tiles run at Eigen's own GEMM rate.
//   BLAS: with MOE_BLAS defined (CMake: link moe::blas, built with -DMOE_BLAS=openblas or blis) the
//        tiles go to cblas_sgemm / cblas_dgemm. Link the serial build of the library (Debian's
//        libopenblas-serial-dev or libblis-serial-dev; moe::blas does): the tiles are single-threaded
//        by design, threads are moe's.
//
// Tiling: the output is cut into tiles of kTileRows x kTileCols, fixed by the shape, and tiles run
// over threads (parallel_for). When a product has few output tiles but a long depth (the weight
// gradient dW = dy x^T of a batch), the depth is cut too, into chunks of kTileDepth: every (tile,
// chunk) runs apart into a partial sum, and the partial sums are added in chunk order. Tiles and
// chunks depend on the shape only, so the result has the same bits on any number of threads.
#include <algorithm>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "moe/core/threads.hpp"
#include "moe/core/types.hpp"

#ifdef MOE_BLAS
#include <cblas.h>
#endif

namespace moe::detail {

constexpr Index kTileRows = 256, kTileCols = 128, kTileDepth = 512;
/// Below this many output tiles, a long depth is split too (enough parallel work for 16 threads).
constexpr Index kMinTiles = 16;

/// Which backend this translation unit multiplies with: "eigen", or "blas" with MOE_BLAS.
inline const char* gemm_backend() {
#ifdef MOE_BLAS
    return "blas";
#else
    return "eigen";
#endif
}

/// C = alpha op(A) op(B) + (accumulate ? C : 0), single-threaded, by the backend.
template <class T>
void gemm_serial(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda, const T* b,
                 Index ldb, bool accumulate, T* c, Index ldc) {
    if (m == 0 || n == 0) return;
    if (k == 0) {
        if (!accumulate)
            for (Index j = 0; j < n; ++j) std::fill(c + j * ldc, c + j * ldc + m, T(0));
        return;
    }
#ifdef MOE_BLAS
    const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    const T beta = accumulate ? T(1) : T(0);
    if constexpr (std::is_same_v<T, float>)
        cblas_sgemm(CblasColMajor, ta, tb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
    else
        cblas_dgemm(CblasColMajor, ta, tb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
#else
    // One Eigen product per scalar type: a transposed operand (or alpha != 1) is first copied into a
    // column-major tile, so Eigen instantiates its GEMM kernel once, not once per (op(A), op(B),
    // alpha). Each instantiation cost about 20 s of compile time per translation unit; the copies
    // cost a pass over a tile that the product then reads 128 (A) or m (B) times.
    constexpr int MR = 32, NC = 128, KC = 256;  // see the header comment: at most 32 rows keeps Eigen serial
    using Stride = Eigen::OuterStride<>;
    using Dense = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
    using CTile = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor, MR, NC>;
    using ATile = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor, MR, KC>;
    using BTile = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor, KC, NC>;
    thread_local std::vector<T> copies;  // per thread, grown once: nothing allocated in steady state
    if (copies.size() < std::size_t(MR * KC + KC * NC)) copies.resize(std::size_t(MR * KC + KC * NC));
    T* const a_copy = copies.data();
    T* const b_copy = a_copy + MR * KC;
    for (Index j0 = 0; j0 < n; j0 += NC) {
        const Index nn = std::min<Index>(NC, n - j0);
        for (Index p0 = 0; p0 < k; p0 += KC) {
            const Index kk = std::min<Index>(KC, k - p0);
            const T* bp = trans_b ? b + j0 + p0 * ldb : b + p0 + j0 * ldb;
            Index b_ld = ldb;
            if (trans_b) {
                Eigen::Map<Dense>(b_copy, kk, nn) = Eigen::Map<const Dense, 0, Stride>(bp, nn, kk, Stride(ldb)).transpose();
                bp = b_copy, b_ld = kk;
            }
            const Eigen::Map<const BTile, 0, Stride> bt(bp, kk, nn, Stride(b_ld));
            for (Index i0 = 0; i0 < m; i0 += MR) {
                const Index mm = std::min<Index>(MR, m - i0);
                Eigen::Map<CTile, 0, Stride> ct(c + i0 + j0 * ldc, mm, nn, Stride(ldc));
                if (!accumulate && p0 == 0) ct.setZero();
                const T* ap = trans_a ? a + p0 + i0 * lda : a + i0 + p0 * lda;
                Index a_ld = lda;
                if (trans_a) {
                    Eigen::Map<Dense>(a_copy, mm, kk) = alpha * Eigen::Map<const Dense, 0, Stride>(ap, kk, mm, Stride(lda)).transpose();
                    ap = a_copy, a_ld = mm;
                } else if (alpha != T(1)) {
                    Eigen::Map<Dense>(a_copy, mm, kk) = alpha * Eigen::Map<const Dense, 0, Stride>(ap, mm, kk, Stride(lda));
                    ap = a_copy, a_ld = mm;
                }
                ct.noalias() += Eigen::Map<const ATile, 0, Stride>(ap, mm, kk, Stride(a_ld)) * bt;
            }
        }
    }
#endif
}

/// Per calling thread: the partial sums of a depth-split product (grow-only).
template <class T>
std::vector<T>& gemm_partials() {
    thread_local std::vector<T> partials;
    return partials;
}

/// C = alpha op(A) op(B) + (accumulate ? C : 0), all column-major with leading dimensions; op(A) is
/// m x k, op(B) k x n, C m x n. Tiled over threads (see the header comment); same bits on any number
/// of threads.
template <class T>
void gemm(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda, const T* b, Index ldb,
          bool accumulate, T* c, Index ldc) {
    if (m == 0 || n == 0) return;
    const Index mt = (m + kTileRows - 1) / kTileRows, nt = (n + kTileCols - 1) / kTileCols, tiles = mt * nt;
    const double flops = 2.0 * double(m) * double(n) * double(k);
    const T* a_at = a;
    auto a_block = [&](Index i0, Index p0) { return trans_a ? a_at + p0 + i0 * lda : a_at + i0 + p0 * lda; };
    auto b_block = [&](Index p0, Index j0) { return trans_b ? b + j0 + p0 * ldb : b + p0 + j0 * ldb; };
    const Index kt = (k + kTileDepth - 1) / kTileDepth;
    if (tiles >= kMinTiles || kt <= 1) {
        parallel_for_each(tiles, flops, [&](Index t) {
            const Index i0 = (t % mt) * kTileRows, j0 = (t / mt) * kTileCols;
            const Index mm = std::min(kTileRows, m - i0), nn = std::min(kTileCols, n - j0);
            gemm_serial(trans_a, trans_b, mm, nn, k, alpha, a_block(i0, 0), lda, b_block(0, j0), ldb, accumulate,
                        c + i0 + j0 * ldc, ldc);
        });
        return;
    }
    // Few tiles, long depth: partial sums per (tile, depth chunk), added in chunk order.
    auto& partials = gemm_partials<T>();
    const Index tile_size = kTileRows * kTileCols;
    if (partials.size() < std::size_t(tiles * kt * tile_size)) partials.resize(std::size_t(tiles * kt * tile_size));
    T* p = partials.data();
    parallel_for_each(tiles * kt, flops, [&](Index task) {
        const Index t = task % tiles, chunk = task / tiles;
        const Index i0 = (t % mt) * kTileRows, j0 = (t / mt) * kTileCols, p0 = chunk * kTileDepth;
        const Index mm = std::min(kTileRows, m - i0), nn = std::min(kTileCols, n - j0), kk = std::min(kTileDepth, k - p0);
        gemm_serial(trans_a, trans_b, mm, nn, kk, alpha, a_block(i0, p0), lda, b_block(p0, j0), ldb, false,
                    p + (chunk * tiles + t) * tile_size, mm);
    });
    parallel_for_each(tiles, double(tiles * kt * tile_size), [&](Index t) {
        const Index i0 = (t % mt) * kTileRows, j0 = (t / mt) * kTileCols;
        const Index mm = std::min(kTileRows, m - i0), nn = std::min(kTileCols, n - j0);
        for (Index j = 0; j < nn; ++j) {
            T* cj = c + i0 + (j0 + j) * ldc;
            if (!accumulate) std::fill(cj, cj + mm, T(0));
            for (Index chunk = 0; chunk < kt; ++chunk) {
                const T* pj = p + (chunk * tiles + t) * tile_size + j * mm;
                for (Index i = 0; i < mm; ++i) cj[i] += pj[i];
            }
        }
    });
}

/// The arguments of one product C (+)= alpha op(A) op(B) (see gemm).
template <class T>
struct GemmArgs {
    bool trans_a = false, trans_b = false;
    Index m = 0, n = 0, k = 0;
    T alpha = T(1);
    const T* a = nullptr;
    Index lda = 1;
    const T* b = nullptr;
    Index ldb = 1;
    bool accumulate = false;
    T* c = nullptr;
    Index ldc = 1;
};

/// Runs `count` independent products (product(i) returns product i's GemmArgs; outputs must not
/// overlap) in one parallel loop over all their output tiles: a bank of experts or gates keeps every
/// thread busy whatever the number of groups. Tiles as gemm's; no depth split.
template <class T, class Product>
void gemm_many(Index count, Product&& product) {
    constexpr Index kMaxProducts = 512;
    if (count > kMaxProducts) {  // more products than the tile table holds: one after another
        for (Index i = 0; i < count; ++i) {
            const GemmArgs<T> g = product(i);
            gemm<T>(g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, g.accumulate, g.c, g.ldc);
        }
        return;
    }
    Index first_tile[kMaxProducts + 1];  // product i owns tasks [first_tile[i], first_tile[i + 1])
    first_tile[0] = 0;
    double flops = 0;
    for (Index i = 0; i < count; ++i) {
        const GemmArgs<T> g = product(i);
        const Index tiles = g.m > 0 && g.n > 0 ? ((g.m + kTileRows - 1) / kTileRows) * ((g.n + kTileCols - 1) / kTileCols) : 0;
        first_tile[i + 1] = first_tile[i] + tiles;
        flops += 2.0 * double(g.m) * double(g.n) * double(g.k);
    }
    parallel_for_each(first_tile[count], flops, [&](Index task) {
        const Index i = Index(std::upper_bound(first_tile, first_tile + count + 1, task) - first_tile) - 1;
        const GemmArgs<T> g = product(i);
        const Index mt = (g.m + kTileRows - 1) / kTileRows, t = task - first_tile[i];
        const Index i0 = (t % mt) * kTileRows, j0 = (t / mt) * kTileCols;
        const Index mm = std::min(kTileRows, g.m - i0), nn = std::min(kTileCols, g.n - j0);
        const T* a = g.trans_a ? g.a + i0 * g.lda : g.a + i0;
        const T* b = g.trans_b ? g.b + j0 : g.b + j0 * g.ldb;
        gemm_serial(g.trans_a, g.trans_b, mm, nn, g.k, g.alpha, a, g.lda, b, g.ldb, g.accumulate, g.c + i0 + j0 * g.ldc, g.ldc);
    });
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

}  // namespace moe::detail
