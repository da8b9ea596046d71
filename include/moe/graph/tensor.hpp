#pragma once
// Tensors of a running graph: PyTorch's layout (row-major, contiguous, outermost dimension first)
// with the batch size filled in. A [B, F] tensor is then exactly the library's F x B column-major
// batch, so Linear, BatchNorm and the losses read graph values without copies.
//
// The helpers here are the few loops every op is made of: walking an index space with per-operand
// strides (broadcasting is a stride of 0), and row-major matrix products, batched with broadcast
// batch dimensions (torch.matmul, bmm, einsum).
#include <algorithm>
#include <array>
#include <initializer_list>
#include <stdexcept>
#include <vector>

#include "moe/core/threads.hpp"
#include "moe/detail/gemm.hpp"
#include "moe/graph/shape.hpp"

namespace moe::graph {

/// Concrete dimensions of a tensor at run time (also strides and permutations): at most
/// kMaxRank entries held in place, so the loops of a step never allocate for them. The graph check
/// refuses tensors of higher rank.
class Dims {
public:
    static constexpr std::size_t kMaxRank = std::size_t(graph::kMaxRank);

    Dims() = default;
    Dims(std::size_t n, Index value) { resize(n, value); }
    Dims(std::initializer_list<Index> values) {
        for (Index v : values) push_back(v);
    }
    Dims(const Index* first, const Index* last) {
        for (; first != last; ++first) push_back(*first);
    }
    explicit Dims(const std::vector<Index>& values) : Dims(values.data(), values.data() + values.size()) {}

    std::size_t size() const { return n_; }
    bool empty() const { return n_ == 0; }
    Index& operator[](std::size_t i) { return d_[i]; }
    Index operator[](std::size_t i) const { return d_[i]; }
    Index back() const { return d_[n_ - 1]; }
    const Index* begin() const { return d_.data(); }
    const Index* end() const { return d_.data() + n_; }
    Index* begin() { return d_.data(); }
    Index* end() { return d_.data() + n_; }
    void push_back(Index v) {
        if (n_ == kMaxRank) throw std::length_error("moe::graph::Dims: more than 8 dimensions");
        d_[n_++] = v;
    }
    void push_front(Index v) {
        push_back(v);
        std::rotate(d_.begin(), d_.begin() + std::ptrdiff_t(n_ - 1), d_.begin() + std::ptrdiff_t(n_));
    }
    void resize(std::size_t n, Index value = 0) {
        if (n > kMaxRank) throw std::length_error("moe::graph::Dims: more than 8 dimensions");
        for (std::size_t i = n_; i < n; ++i) d_[i] = value;
        n_ = n;
    }
    void assign(std::size_t n, Index value) {
        n_ = 0;
        resize(n, value);
    }
    bool operator==(const Dims& o) const { return n_ == o.n_ && std::equal(begin(), end(), o.begin()); }

private:
    std::array<Index, kMaxRank> d_{};
    std::size_t n_ = 0;
};

/// The shape with the batch size `batch` in place of B.
inline Dims resolve(const Shape& s, Index batch) {
    Dims d(s.dims);
    for (Index& x : d)
        if (x == kBatch) x = batch;
    return d;
}

inline Index numel(const Dims& d) {
    Index n = 1;
    for (Index x : d) n *= x;
    return n;
}

/// A tensor seen as [outer, size, inner] around dimension `dim` (outer: the product of the
/// dimensions before it, inner: of those after): what softmax, select, stack and cat loop over.
struct AroundDim {
    Index outer = 1, size = 1, inner = 1;
    AroundDim(const Dims& d, Index dim) {
        for (std::size_t i = 0; i < d.size(); ++i) {
            if (Index(i) < dim)
                outer *= d[i];
            else if (Index(i) == dim)
                size = d[i];
            else
                inner *= d[i];
        }
    }
};

/// Row-major strides of a contiguous tensor.
inline Dims strides_of(const Dims& d) {
    Dims s(d.size(), 0);
    Index step = 1;
    for (std::size_t i = d.size(); i-- > 0;) {
        s[i] = step;
        step *= d[i];
    }
    return s;
}

/// The strides with which a tensor of dims `from` is read as a tensor of dims `to` under PyTorch's
/// broadcasting (dimensions aligned on the right; a dimension of 1, or a missing one, repeats: stride 0).
inline Dims broadcast_strides(const Dims& from, const Dims& to) {
    const Dims s = strides_of(from);
    Dims out(to.size(), 0);
    const std::size_t shift = to.size() - from.size();
    for (std::size_t i = 0; i < from.size(); ++i) out[shift + i] = from[i] == 1 ? 0 : s[i];
    return out;
}

/// Calls f(offsets) for every index of `dims` in row-major order, where offsets[k] is the index's
/// offset in operand k (sum of index * strides[k]). The innermost dimension is a plain loop.
template <std::size_t K, class F>
void walk(const Dims& dims, const std::array<Dims, K>& strides, F&& f) {
    const std::size_t r = dims.size();
    std::array<Index, K> off{};
    if (r == 0) {
        f(off);
        return;
    }
    for (Index d : dims)
        if (d == 0) return;
    std::array<Index, Dims::kMaxRank> idx{};
    const Index inner = dims[r - 1];
    while (true) {
        std::array<Index, K> o = off;
        for (Index i = 0; i < inner; ++i) {
            f(o);
            for (std::size_t k = 0; k < K; ++k) o[k] += strides[k][r - 1];
        }
        // Advance the outer dimensions (odometer).
        std::size_t d = r - 1;
        while (true) {
            if (d == 0) return;
            --d;
            ++idx[d];
            for (std::size_t k = 0; k < K; ++k) off[k] += strides[k][d];
            if (idx[d] < dims[d]) break;
            for (std::size_t k = 0; k < K; ++k) off[k] -= strides[k][d] * dims[d];
            idx[d] = 0;
        }
    }
}

/// Row-major C (n x m) = op(A) op(B) (+ C when accumulate); op(A) is n x k, op(B) k x m; lda, ldb,
/// ldc are row strides. Small products (a gate row times its experts) run as plain loops, the others
/// as one serial GEMM of the backend (the column-major product C^T = op(B)^T op(A)^T).
template <class T>
void row_gemm(bool trans_a, bool trans_b, Index n, Index m, Index k, const T* a, Index lda, const T* b, Index ldb, T* c,
              Index ldc, bool accumulate) {
    if (n * m * k > 4096) {
        moe::detail::gemm_serial<T>(trans_b, trans_a, m, n, k, T(1), b, ldb, a, lda, accumulate, c, ldc);
        return;
    }
    // Eigen's maps vectorise the short rows whatever the compiler's flags (plain loops do not at -O2).
    using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
    for (Index i = 0; i < n; ++i) {
        T* ci = c + i * ldc;
        if (trans_b && !trans_a) {  // dot products of contiguous rows
            const Eigen::Map<const Vec> ai(a + i * lda, k);
            for (Index j = 0; j < m; ++j) {
                const T s = ai.dot(Eigen::Map<const Vec>(b + j * ldb, k));
                ci[j] = accumulate ? ci[j] + s : s;
            }
            continue;
        }
        Eigen::Map<Vec> row(ci, m);
        if (!accumulate) row.setZero();
        for (Index p = 0; p < k; ++p) {
            const T av = trans_a ? a[p * lda + i] : a[i * lda + p];
            if (!trans_b)
                row += av * Eigen::Map<const Vec>(b + p * ldb, m);  // rows of B scaled and added
            else
                for (Index j = 0; j < m; ++j) ci[j] += av * b[j * ldb + p];
        }
    }
}

/// A batch of row-major products C[i] = A[a_off(i)] B[b_off(i)] over the batch index space `batch`
/// (broadcast: operand strides 0). A is n x k, B k x m, C m per row; all contiguous per matrix.
struct BatchedProduct {
    Dims batch;               ///< the output's batch dimensions
    Dims a_stride, b_stride;  ///< per batch dimension, in matrices of A and B (0: broadcast)
    Index n = 0, k = 0, m = 0;

    Index count() const { return numel(batch); }
    /// Offsets (in matrices) of A and B for each output matrix, in order.
    void offsets(std::vector<Index>& a, std::vector<Index>& b) const {
        a.clear();
        b.clear();
        walk<2>(batch, {a_stride, b_stride}, [&](const std::array<Index, 2>& o) {
            a.push_back(o[0]);
            b.push_back(o[1]);
        });
    }
    /// Matrices an operand holds: the batch dimensions it does not broadcast.
    Index matrices(const Dims& stride) const {
        Index n_mats = 1;
        for (std::size_t i = 0; i < batch.size(); ++i)
            if (stride[i] != 0) n_mats *= batch[i];
        return n_mats;
    }
    bool a_broadcast() const { return std::count(a_stride.begin(), a_stride.end(), Index(0)) > 0; }
    bool b_broadcast() const { return std::count(b_stride.begin(), b_stride.end(), Index(0)) > 0; }

    /// C = A B.
    template <class T>
    void forward(const T* a, const T* b, T* c, std::vector<Index>& ao, std::vector<Index>& bo) const {
        offsets(ao, bo);
        const Index count = Index(ao.size());
        parallel_for(count, 16, 2.0 * double(count) * double(n * k * m), [&](Index i0, Index i1) {
            if (n == 1 && k * m <= 4096) {  // a vector times a small matrix per entry: one product each
                using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
                using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
                for (Index i = i0; i < i1; ++i)
                    Eigen::Map<Vec>(c + i * m, m).noalias() =
                        Eigen::Map<const RowMajor>(b + bo[std::size_t(i)] * k * m, k, m).transpose() *
                        Eigen::Map<const Vec>(a + ao[std::size_t(i)] * k, k);
                return;
            }
            for (Index i = i0; i < i1; ++i)
                row_gemm<T>(false, false, n, m, k, a + ao[std::size_t(i)] * n * k, k, b + bo[std::size_t(i)] * k * m, m,
                            c + i * n * m, m, false);
        });
    }
    /// dA += dC B^T and dB += A^T dC (either may be null; = instead of += where *_fresh). Broadcast
    /// operands sum over the batch entries that read them, in batch order (serial then: the sums
    /// must not depend on threads; and never fresh, several entries add into one matrix).
    template <class T>
    void backward(const T* a, const T* b, const T* dc, T* da, T* db, std::vector<Index>& ao, std::vector<Index>& bo,
                  bool da_fresh = false, bool db_fresh = false) const {
        offsets(ao, bo);
        const Index count = Index(ao.size());
        const double flops = 2.0 * double(count) * double(n * k * m);
        auto run = [&](bool serial, auto&& one) {
            if (serial)
                for (Index i = 0; i < count; ++i) one(i);
            else
                parallel_for(count, 16, flops, [&](Index i0, Index i1) {
                    for (Index i = i0; i < i1; ++i) one(i);
                });
        };
        if (n == 1 && !a_broadcast() && !b_broadcast()) {
            // Vector times matrix per entry (a gate row times its experts): both gradients in one
            // pass over each entry's dC and B, as the library's combine does.
            using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
            parallel_for(count, 16, flops, [&](Index i0, Index i1) {
                for (Index i = i0; i < i1; ++i) {
                    const Eigen::Map<const Vec> g(dc + i * m, m);
                    const T* bi = b + bo[std::size_t(i)] * k * m;
                    const T* ai = a + ao[std::size_t(i)] * k;
                    T* dai = da ? da + ao[std::size_t(i)] * k : nullptr;
                    T* dbi = db ? db + bo[std::size_t(i)] * k * m : nullptr;
                    for (Index p = 0; p < k; ++p) {
                        if (dai) {
                            const T s = Eigen::Map<const Vec>(bi + p * m, m).dot(g);
                            dai[p] = da_fresh ? s : dai[p] + s;
                        }
                        if (dbi) {
                            Eigen::Map<Vec> d(dbi + p * m, m);
                            if (db_fresh)
                                d = ai[p] * g;
                            else
                                d += ai[p] * g;
                        }
                    }
                }
            });
            return;
        }
        if (da && da_fresh && a_broadcast()) std::fill(da, da + matrices(a_stride) * n * k, T(0));
        if (db && db_fresh && b_broadcast()) std::fill(db, db + matrices(b_stride) * k * m, T(0));
        const bool set_a = da_fresh && !a_broadcast(), set_b = db_fresh && !b_broadcast();
        if (da)
            run(a_broadcast(), [&](Index i) {
                row_gemm<T>(false, true, n, k, m, dc + i * n * m, m, b + bo[std::size_t(i)] * k * m, m,
                            da + ao[std::size_t(i)] * n * k, k, !set_a);
            });
        if (db)
            run(b_broadcast(), [&](Index i) {
                row_gemm<T>(true, false, k, m, n, a + ao[std::size_t(i)] * n * k, k, dc + i * n * m, m,
                            db + bo[std::size_t(i)] * k * m, m, !set_b);
            });
    }
};

/// Copies (or adds, when accumulate) src, a tensor of dims `dims`, into dst permuted: dst's
/// dimension i is src's dimension perm[i].
template <class T>
void permute(const T* src, const Dims& dims, const Dims& perm, T* dst, bool accumulate) {
    const Dims s = strides_of(dims);
    Dims out_dims(perm.size(), 0), src_strides(perm.size(), 0);
    for (std::size_t i = 0; i < perm.size(); ++i) {
        out_dims[i] = dims[std::size_t(perm[i])];
        src_strides[i] = s[std::size_t(perm[i])];
    }
    Index j = 0;
    walk<1>(out_dims, {src_strides}, [&](const std::array<Index, 1>& o) {
        if (accumulate)
            dst[j++] += src[o[0]];
        else
            dst[j++] = src[o[0]];
    });
}

}  // namespace moe::graph
