#pragma once
// Matrix products through one interface: C (+)= alpha op(A) op(B) on column-major memory with
// leading dimensions, with two backends chosen at compile time, tiled over threads the same way.
//
//   Eigen (the default): Eigen's public product on tiles of at most 256 x 128 (output) by 256 (depth;
//        128 in double). Types whose maximum sizes are fixed at compile time make Eigen keep its
//        packing buffers in fixed arrays on the stack (nothing allocated, ever; 384 KB in either
//        dtype: a thread that runs moe needs a stack of more than that, as glibc's and OpenMP's
//        default threads have), and each tile's product packs each operand once. Eigen would thread
//        a product of more than 32 rows with omp_get_max_threads() threads outside a parallel
//        region: for the span of a tile the calling thread's OpenMP thread count is set to 1 (the
//        threads are moe's; a program that calls Eigen::setNbThreads(n > 1) makes Eigen thread, and
//        allocate in, these tiles too). The kernel is instantiated for column-major operands only
//        (each instantiation costs about 20 s of compile time per translation unit): a transposed
//        operand read by several tiles is copied once per product, and when the transposed product
//        C^T = op(B)^T op(A)^T copies much less it is computed instead and transposed into C. The
//        library builds against any Eigen 3.4.x and allocates nothing in steady state.
//   BLAS: with MOE_BLAS defined (CMake: link moe::blas, built with -DMOE_BLAS=openblas or blis) the
//        tiles go to cblas_sgemm / cblas_dgemm, called from moe's threads at once. The library must
//        be safe for that and single-threaded: OpenBLAS's OpenMP build (Debian's
//        libopenblas-openmp-dev; its serial build races when called concurrently), whose thread
//        count moe sets to 1 on the first product (openblas_set_num_threads: a process-wide
//        setting), or BLIS's serial build (libblis-serial-dev). moe::blas links the right one.
//
// Tiling: the output is cut into tiles of kTileRows x kTileCols, fixed by the shape, and tiles run
// over threads (parallel_for). When a product has few output tiles but a long depth (the weight
// gradient dW = dy x^T of a batch), the depth is cut too, into chunks of kTileDepth: every (tile,
// chunk) runs apart into a partial sum, and the partial sums are added in chunk order. Tiles and
// chunks depend on the shape only, so the result has the same bits on any number of threads.
// Weight gradients go through gemm_reductions instead: with the BLAS backend, tiles widened for
// narrow outputs, the depth cut into chunks of kReductionDepth, several layers' products in one
// parallel loop; with Eigen, gemm's tiles.
#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "moe/core/threads.hpp"
#include "moe/core/types.hpp"

#ifdef MOE_BLAS
#include <cblas.h>
// OpenBLAS's thread count, when the CBLAS is OpenBLAS (a weak reference: null with BLIS).
extern "C" void openblas_set_num_threads(int) __attribute__((weak));
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

/// Keeps Eigen's products on the calling thread for its lifetime: Eigen threads a product of more
/// than 32 output rows with omp_get_max_threads() threads unless it already runs inside a parallel
/// region, and the tiles of gemm are serial by design. Sets the calling thread's OpenMP thread count
/// (an ICV of its own task, not a global) to 1 and restores it.
struct SerialEigenProducts {
#ifdef _OPENMP
    const int saved = omp_get_max_threads();
    SerialEigenProducts() {
        if (saved > 1) omp_set_num_threads(1);
    }
    ~SerialEigenProducts() {
        if (saved > 1) omp_set_num_threads(saved);
    }
    SerialEigenProducts(const SerialEigenProducts&) = delete;
    SerialEigenProducts& operator=(const SerialEigenProducts&) = delete;
#endif
};

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
    // OpenBLAS's OpenMP build threads a product called outside a parallel region: the tiles are the
    // threads here, and a product's bits must not depend on where it was called from.
    static const bool single_threaded = [] {
        if (openblas_set_num_threads) openblas_set_num_threads(1);
        return true;
    }();
    (void)single_threaded;
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
    // cost a pass over a tile that the product then reads NC (A) or MR (B) times.
    // gemm's output tile in one product, so that B is packed once per depth chunk (tiles of 32 rows
    // repacked it 8 times). The depth keeps the packed operands at 384 KB of stack in either dtype.
    constexpr int MR = 256, NC = 128, KC = sizeof(T) == 4 ? 256 : 128;
    using Stride = Eigen::OuterStride<>;
    using Dense = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
    using CTile = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor, MR, NC>;
    using ATile = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor, MR, KC>;
    using BTile = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor, KC, NC>;
    [[maybe_unused]] SerialEigenProducts serial;
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

#ifdef MOE_BLAS
/// BLIS grows its pools of packing buffers the first time more threads are inside it at once than
/// ever before, which may happen at any later step, as the threads' timing falls: with three busy
/// loops beside it, 59 runs in 250 of a small MLP's predicts allocated (22 times) after a first
/// predict; with this warm-up 0 in 300. So before the first threaded product (and again when there
/// are more threads), every thread multiplies until each has done 32 products since all started:
/// a few milliseconds, once per process. OpenBLAS (which allocates per call anyway) gets it too.
inline void warm_blas_for_threads() {
#ifdef _OPENMP
    static std::atomic<int> warmed{1};
    if (omp_in_parallel() || omp_get_max_threads() <= warmed.load()) return;
    const int team = omp_get_max_threads();
    constexpr Index kSize = 192;  // large enough for BLIS to pack (small products skip packing)
    const std::vector<float> a(std::size_t(kSize * kSize), 1.0f);
    std::atomic<int> started{0}, finished{0};
#pragma omp parallel num_threads(team)
    {
        const int n = omp_get_num_threads();
        std::vector<float> c(std::size_t(kSize * kSize));
        started.fetch_add(1);
        int after_all_started = 0;
        while (finished.load() < n) {
            gemm_serial<float>(false, false, kSize, kSize, kSize, 1.0f, a.data(), kSize, a.data(), kSize, false, c.data(), kSize);
            if (started.load() == n && ++after_all_started == 32) finished.fetch_add(1);
        }
    }
    warmed.store(team);
#endif
}
#endif

/// Per calling thread: the partial sums of a depth-split product (grow-only).
template <class T>
std::vector<T>& gemm_partials() {
    thread_local std::vector<T> partials;
    return partials;
}

/// Per calling thread: transposed operands copied once per product (grow-only).
template <class T>
std::vector<T>& gemm_untransposed() {
    thread_local std::vector<T> copies;
    return copies;
}

/// Products whose transposed operands need more than this many elements in copies leave the copying
/// to each tile (the copies would double a large model's weights in memory).
constexpr Index kMaxUntransposed = Index(1) << 22;

/// Writes op(X) = X^T (rows x cols; X is stored cols x rows with leading dimension ld) column-major
/// to `out`, and points x, ld at it.
template <class T>
void untranspose(const T*& x, Index& ld, Index rows, Index cols, T* out) {
    using Dense = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
    Eigen::Map<Dense>(out, rows, cols) = Eigen::Map<const Dense, 0, Eigen::OuterStride<>>(x, cols, rows, Eigen::OuterStride<>(ld)).transpose();
    x = out;
    ld = rows;
}

/// Elements of the copies a product needs when its transposed operands are copied once (the Eigen
/// backend): A when several column tiles read it, B when several row tiles do. Each tile would
/// otherwise copy its part of them (a layer's weights 16 times per forward at batch 2048: 3% of
/// the training step's instructions). The BLAS backend reads transposed operands as they are.
inline Index untransposed_size(bool trans_a, bool trans_b, Index m, Index n, Index k) {
#ifdef MOE_BLAS
    (void)trans_a, (void)trans_b, (void)m, (void)n, (void)k;
    return 0;
#else
    const Index mt = (m + kTileRows - 1) / kTileRows, nt = (n + kTileCols - 1) / kTileCols;
    return (trans_a && nt > 1 ? m * k : 0) + (trans_b && mt > 1 ? k * n : 0);
#endif
}

/// Copies the transposed operands that untransposed_size counts into `out` and makes them plain.
template <class T>
void untranspose_operands(bool& trans_a, bool& trans_b, Index m, Index n, Index k, const T*& a, Index& lda,
                          const T*& b, Index& ldb, T* out) {
    const Index mt = (m + kTileRows - 1) / kTileRows, nt = (n + kTileCols - 1) / kTileCols;
    if (trans_a && nt > 1) {
        untranspose(a, lda, m, k, out);
        trans_a = false;
        out += m * k;
    }
    if (trans_b && mt > 1) {
        untranspose(b, ldb, k, n, out);
        trans_b = false;
    }
}

/// gemm's tiles over threads (gemm decides first whether to compute C or C^T).
template <class T>
void gemm_tiles(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda, const T* b,
                Index ldb, bool accumulate, T* c, Index ldc) {
    if (const Index copies = untransposed_size(trans_a, trans_b, m, n, k); copies > 0 && copies <= kMaxUntransposed) {
        auto& buffer = gemm_untransposed<T>();
        if (buffer.size() < std::size_t(copies)) buffer.resize(std::size_t(copies));
        untranspose_operands(trans_a, trans_b, m, n, k, a, lda, b, ldb, buffer.data());
    }
#ifdef MOE_BLAS
    warm_blas_for_threads();
#endif
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

/// Per calling thread: C^T when gemm computes the transposed product (grow-only).
template <class T>
std::vector<T>& gemm_transposed_result() {
    thread_local std::vector<T> result;
    return result;
}

/// C = alpha op(A) op(B) + (accumulate ? C : 0), all column-major with leading dimensions; op(A) is
/// m x k, op(B) k x n, C m x n. Tiled over threads (see the header comment); same bits on any number
/// of threads.
template <class T>
void gemm(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda, const T* b, Index ldb,
          bool accumulate, T* c, Index ldc) {
    if (m == 0 || n == 0) return;
#ifndef MOE_BLAS
    // The Eigen backend copies each transposed operand once. When the transposed product C^T =
    // op(B)^T op(A)^T copies much less, counting the transposition of its result, it is computed
    // instead: the weight gradient dW^T = x dy^T of a layer with many outputs and few inputs would
    // copy dy (batch x outputs); C^T copies x and writes C^T (inputs x outputs) twice.
    const Index direct = (trans_a ? m * k : 0) + (trans_b ? k * n : 0);
    const Index transposed = (trans_a ? 0 : m * k) + (trans_b ? 0 : k * n) + 2 * m * n;
    if (2 * transposed < direct && m * n <= kMaxUntransposed) {
        auto& ct = gemm_transposed_result<T>();
        if (ct.size() < std::size_t(m * n)) ct.resize(std::size_t(m * n));
        T* const t = ct.data();
        gemm_tiles<T>(!trans_b, !trans_a, n, m, k, alpha, b, ldb, a, lda, false, t, n);
        parallel_for_each((n + kTileCols - 1) / kTileCols, double(m * n), [&](Index chunk) {
            const Index j0 = chunk * kTileCols, j1 = std::min(n, j0 + kTileCols);
            for (Index j = j0; j < j1; ++j) {
                T* cj = c + j * ldc;
                if (accumulate)
                    for (Index i = 0; i < m; ++i) cj[i] += t[j + i * n];
                else
                    for (Index i = 0; i < m; ++i) cj[i] = t[j + i * n];
            }
        });
        return;
    }
#endif
    gemm_tiles<T>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, accumulate, c, ldc);
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

/// How gemm_many cuts a product's output: tiles of `rows` x `cols` (gemm's by default), or, with
/// even_cols, round(n / cols) column tiles (at least one) of equal width, so that no tile is a
/// narrow remainder (283 columns: one tile, not 256 + 27; a tile packs its rows of A whatever its
/// width).
struct GemmTiles {
    Index rows = kTileRows, cols = kTileCols;
    bool even_cols = false;
    Index col_tiles(Index n) const { return even_cols ? std::max<Index>(1, (n + cols / 2) / cols) : (n + cols - 1) / cols; }
    Index col_width(Index n) const { return even_cols ? (n + col_tiles(n) - 1) / col_tiles(n) : cols; }
};
/// The tiles of a SparseMoE's experts (one product per expert over its tokens): 256 columns instead
/// of 128 made the d = 512 experts' products 10-17% faster (180-192 -> 198-210 GFLOP/s on one
/// thread, OpenBLAS: a tile packs its rows of A once for all its columns), and equal widths
/// avoid remainder tiles of a few tokens.
constexpr GemmTiles kExpertTiles{kTileRows, 256, true};

/// Runs `count` independent products (product(i) returns product i's GemmArgs; outputs must not
/// overlap) in one parallel loop over all their output tiles: a bank of experts or gates keeps every
/// thread busy whatever the number of groups. Tiles fixed by the shapes (`tiling`); no depth split.
template <class T, class Product>
void gemm_many(Index count, Product&& product, GemmTiles tiling = {}) {
    constexpr Index kMaxProducts = 512;
    if (count > kMaxProducts) {  // more products than the tile table holds: one after another
        for (Index i = 0; i < count; ++i) {
            const GemmArgs<T> g = product(i);
            gemm<T>(g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, g.accumulate, g.c, g.ldc);
        }
        return;
    }
#ifdef MOE_BLAS
    warm_blas_for_threads();
#endif
    Index first_tile[kMaxProducts + 1];  // product i owns tasks [first_tile[i], first_tile[i + 1])
    first_tile[0] = 0;
    double flops = 0;
    Index copies = 0;
    for (Index i = 0; i < count; ++i) {
        const GemmArgs<T> g = product(i);
        const Index tiles = g.m > 0 && g.n > 0 ? ((g.m + tiling.rows - 1) / tiling.rows) * tiling.col_tiles(g.n) : 0;
        first_tile[i + 1] = first_tile[i] + tiles;
        flops += 2.0 * double(g.m) * double(g.n) * double(g.k);
        if (tiles > 0) copies += untransposed_size(g.trans_a, g.trans_b, g.m, g.n, g.k);
    }
    // Transposed operands read by several tiles: copied once each (see untransposed_size).
    // The products with those copies (grow-only). The tasks below run on other threads too: they
    // must reach this thread's vector through a reference, not name the thread_local (each thread
    // would see its own, empty one).
    thread_local std::vector<GemmArgs<T>> plain_of_this_thread;
    std::vector<GemmArgs<T>>& plain = plain_of_this_thread;
    const bool untransposed = copies > 0 && copies <= kMaxUntransposed;
    if (untransposed) {
        if (plain.size() < std::size_t(count)) plain.resize(std::size_t(count));
        auto& buffer = gemm_untransposed<T>();
        if (buffer.size() < std::size_t(copies)) buffer.resize(std::size_t(copies));
        T* out = buffer.data();
        for (Index i = 0; i < count; ++i) {
            GemmArgs<T>& g = plain[std::size_t(i)] = product(i);
            if (first_tile[i + 1] == first_tile[i]) continue;
            const Index size = untransposed_size(g.trans_a, g.trans_b, g.m, g.n, g.k);
            untranspose_operands(g.trans_a, g.trans_b, g.m, g.n, g.k, g.a, g.lda, g.b, g.ldb, out);
            out += size;
        }
    }
    parallel_for_each(first_tile[count], flops, [&](Index task) {
        const Index i = Index(std::upper_bound(first_tile, first_tile + count + 1, task) - first_tile) - 1;
        const GemmArgs<T> g = untransposed ? plain[std::size_t(i)] : product(i);
        const Index mt = (g.m + tiling.rows - 1) / tiling.rows, t = task - first_tile[i], width = tiling.col_width(g.n);
        const Index i0 = (t % mt) * tiling.rows, j0 = (t / mt) * width;
        const Index mm = std::min(tiling.rows, g.m - i0), nn = std::min(width, g.n - j0);
        const T* a = g.trans_a ? g.a + i0 * g.lda : g.a + i0;
        const T* b = g.trans_b ? g.b + j0 : g.b + j0 * g.ldb;
        gemm_serial(g.trans_a, g.trans_b, mm, nn, g.k, g.alpha, a, g.lda, b, g.ldb, g.accumulate, g.c + i0 + j0 * g.ldc, g.ldc);
    });
}

/// Depth of the chunks gemm_reductions cuts a long reduction into.
constexpr Index kReductionDepth = 1024;
/// gemm_reductions' output tile of a product with m rows: kTileRows x kTileCols in area, wider
/// (up to 4x) when m is small, as a weight gradient dW^T (inputs x outputs) often is.
inline Index reduction_tile_cols(Index m) {
    return kTileCols * std::max<Index>(1, kTileRows / std::clamp<Index>(m, kTileRows / 4, kTileRows));
}

/// gemm_reductions of at most 512 products.
template <class T, class Product>
void gemm_reductions_slice(Index count, Product&& product) {
#ifdef MOE_BLAS
    warm_blas_for_threads();
#endif
    constexpr Index kMaxProducts = 512;
    struct Plan {
        Index row_tiles, tiles, chunks, chunk_depth, tile_cols, first_task, partials, slot;  // slot: one tile's partial sum
    };
    Plan plans[kMaxProducts];
    Index tasks = 0, partial_size = 0;
    double flops = 0;
    for (Index i = 0; i < count; ++i) {
        const GemmArgs<T> g = product(i);
        Plan& p = plans[i];
        p.tile_cols = reduction_tile_cols(g.m);
        p.row_tiles = (g.m + kTileRows - 1) / kTileRows;
        p.tiles = g.m > 0 && g.n > 0 ? p.row_tiles * ((g.n + p.tile_cols - 1) / p.tile_cols) : 0;
        p.chunks = std::max<Index>(1, g.k / kReductionDepth);
        p.chunk_depth = (g.k + p.chunks - 1) / p.chunks;
        p.slot = std::min(g.m, kTileRows) * p.tile_cols;
        p.first_task = tasks;
        p.partials = partial_size;
        tasks += p.tiles * p.chunks;
        if (p.chunks > 1) partial_size += p.tiles * p.chunks * p.slot;
        flops += 2.0 * double(g.m) * double(g.n) * double(g.k);
    }
    auto& partials = gemm_partials<T>();
    if (partials.size() < std::size_t(partial_size)) partials.resize(std::size_t(partial_size));
    T* const part = partials.data();
    auto tile_of = [](const GemmArgs<T>& g, const Plan& p, Index t, Index& i0, Index& j0, Index& mm, Index& nn) {
        i0 = (t % p.row_tiles) * kTileRows, j0 = (t / p.row_tiles) * p.tile_cols;
        mm = std::min(kTileRows, g.m - i0), nn = std::min(p.tile_cols, g.n - j0);
    };
    auto product_of = [&](Index task) {
        Index i = 0;
        while (plans[i].first_task + plans[i].tiles * plans[i].chunks <= task) ++i;
        return i;
    };
    parallel_for_each_in_turn(tasks, flops, [&](Index task) {
        const Index i = product_of(task);
        const Plan& p = plans[i];
        const GemmArgs<T> g = product(i);
        const Index t = (task - p.first_task) % p.tiles, chunk = (task - p.first_task) / p.tiles;
        Index i0, j0, mm, nn;
        tile_of(g, p, t, i0, j0, mm, nn);
        const Index p0 = chunk * p.chunk_depth, kk = std::min(p.chunk_depth, g.k - p0);
        const T* a = g.trans_a ? g.a + p0 + i0 * g.lda : g.a + i0 + p0 * g.lda;
        const T* b = g.trans_b ? g.b + j0 + p0 * g.ldb : g.b + p0 + j0 * g.ldb;
        if (p.chunks == 1)
            gemm_serial(g.trans_a, g.trans_b, mm, nn, kk, g.alpha, a, g.lda, b, g.ldb, g.accumulate, g.c + i0 + j0 * g.ldc, g.ldc);
        else
            gemm_serial(g.trans_a, g.trans_b, mm, nn, kk, g.alpha, a, g.lda, b, g.ldb, false,
                        part + p.partials + (chunk * p.tiles + t) * p.slot, mm);
    });
    if (partial_size == 0) return;
    // The chunks' partial sums, added into C tile by tile in chunk order.
    Index split_tiles = 0;
    for (Index i = 0; i < count; ++i) split_tiles += plans[i].chunks > 1 ? plans[i].tiles : 0;
    parallel_for_each(split_tiles, double(partial_size), [&](Index s) {
        Index i = 0;
        for (;; ++i) {
            if (plans[i].chunks == 1) continue;
            if (s < plans[i].tiles) break;
            s -= plans[i].tiles;
        }
        const Plan& p = plans[i];
        const GemmArgs<T> g = product(i);
        Index i0, j0, mm, nn;
        tile_of(g, p, s, i0, j0, mm, nn);
        for (Index j = 0; j < nn; ++j) {
            T* cj = g.c + i0 + (j0 + j) * g.ldc;
            if (!g.accumulate) std::fill(cj, cj + mm, T(0));
            for (Index chunk = 0; chunk < p.chunks; ++chunk) {
                const T* pj = part + p.partials + (chunk * p.tiles + s) * p.slot + j * mm;
                for (Index r = 0; r < mm; ++r) cj[r] += pj[r];
            }
        }
    });
}

/// Runs `count` independent products over a long depth (product(i) returns product i's GemmArgs;
/// outputs must not overlap): weight gradients, dW = dy x^T summed over a batch. BLAS backend: one parallel loop
/// over every product's (output tile, depth chunk) task. Unlike gemm's, the tiles widen for a
/// narrow output: each tile packs the whole depth of the operand all its columns share, and the
/// 64 x 2048 dW^T of a 64-input layer in tiles 128 wide repacked it 16 times (147 GFLOP/s against
/// 166 with tiles 512 wide, OpenBLAS, batch 2048). A depth of at least 2 kReductionDepth is cut
/// into chunks of about kReductionDepth, each (tile, chunk) summed apart and the chunks added in
/// order: more tasks than tiles for the threads at little cost (2% on one thread at batch 2048).
/// Tiles and chunks depend on each product's own shape, not on the thread count nor on which
/// products share the call: the same bits on any number of threads.
template <class T, class Product>
void gemm_reductions(Index count, Product&& product) {
#ifndef MOE_BLAS
    // The Eigen backend: one product after another through gemm. Its kernel packs both operands
    // per tile and depth step, so wider tiles save nothing, and gemm's transposed product copies
    // far less of dy (the tiles here made MMoE's step at batch 2048 9% slower).
    for (Index i = 0; i < count; ++i) {
        const GemmArgs<T> g = product(i);
        gemm<T>(g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, g.accumulate, g.c, g.ldc);
    }
#else
    constexpr Index kMaxProducts = 512;
    for (Index first = 0; first < count; first += kMaxProducts)  // as many as the task table holds at once
        gemm_reductions_slice<T>(std::min(kMaxProducts, count - first), [&](Index i) { return product(first + i); });
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

}  // namespace moe::detail
