#pragma once
// Multi-head self-attention with torch.nn.MultiheadAttention's parameters and names, computed block
// by block over the keys with an online softmax (FlashAttention's scheme): memory is O(sequence x
// block) per head, not O(sequence^2), and backward recomputes the attention weights it needs from
// the per-query log-sum-exp kept by forward.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "moe/core/buffer.hpp"
#include "moe/core/parameters.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/threads.hpp"
#include "moe/core/view.hpp"
#include "moe/detail/gemm.hpp"
#include "moe/detail/row_sums.hpp"

namespace moe {

/// Self-attention of B sequences of S tokens each, tokens as columns: x is dim x (B S), sample b's
/// tokens the columns [b S, (b + 1) S) (batch-first, as nn.MultiheadAttention(batch_first=True) on
/// (B, S, dim)). Parameters as PyTorch names them: in_proj_weight (3 dim x dim: q, k, v),
/// in_proj_bias (3 dim), out_proj.weight (dim x dim), out_proj.bias (dim). heads must divide dim.
/// Masks: `causal` (token i attends to keys j <= i) and a key padding mask (one flag per token,
/// true: the key is padding and no query attends to it). A query left with no key to attend to gets
/// zeros (PyTorch gives NaN there). Dropout on the attention weights in training, the same mask
/// regenerated in backward from a counter-based hash (nothing stored).
template <class T>
class MultiheadAttention {
public:
    using Scalar = T;

    MultiheadAttention(Index dim, Index heads, double dropout = 0.0, bool causal = false, std::string name = "moe::MultiheadAttention")
        : name_(std::move(name)), dim_(dim), heads_(heads), dropout_(dropout), causal_(causal), in_w_(3 * dim, dim),
          in_b_(3 * dim, 1), out_w_(dim, dim), out_b_(dim, 1) {
        in_b_.vector = true;  // nn.MultiheadAttention's in_proj_bias is 1-D
        detail::require(dim > 0 && heads > 0, name_, ": dim and heads must be positive, got ", dim, " and ", heads);
        detail::require(dim % heads == 0, name_, ": dim ", dim, " is not divisible by heads ", heads);
        detail::require(dropout >= 0 && dropout < 1, name_, ": dropout must be in [0, 1), got ", dropout);
    }

    Index dim() const { return dim_; }
    Index heads() const { return heads_; }
    bool causal() const { return causal_; }
    const std::string& name() const { return name_; }
    void set_training(bool on) { training_ = on; }
    bool training() const { return training_; }
    /// Keep the dropout mask of the last forward for the next ones (gradient checks), as Dropout does.
    void freeze_mask(bool on) { frozen_ = on; }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        f(join_name(prefix, "in_proj_weight"), in_w_);
        f(join_name(prefix, "in_proj_bias"), in_b_);
        f(join_name(prefix, "out_proj.weight"), out_w_);
        f(join_name(prefix, "out_proj.bias"), out_b_);
    }

    /// PyTorch's init: in_proj_weight Xavier-uniform, out_proj.weight U(-1/sqrt(dim), 1/sqrt(dim)),
    /// biases 0; and the dropout stream's seed.
    void reset_parameters(Rng& rng) {
        const double a = std::sqrt(6.0 / double(dim_ + 3 * dim_)), b = 1.0 / std::sqrt(double(dim_));
        for (Index i = 0; i < in_w_.value.size(); ++i) in_w_.value.data()[i] = T(rng.uniform(-a, a));
        for (Index i = 0; i < out_w_.value.size(); ++i) out_w_.value.data()[i] = T(rng.uniform(-b, b));
        in_b_.value.setZero();
        out_b_.value.setZero();
        seed_ = rng.split();
    }

    /// Training (or evaluation) forward of x (dim x B S) as B sequences of `seq_len` tokens;
    /// key_padding (empty, or one flag per token) marks padding keys (copied). x must stay alive and
    /// unchanged until backward.
    const MatrixView<T>& forward(const ConstView<T>& x, Index seq_len, const std::vector<std::uint8_t>& key_padding = {}) {
        check(x, seq_len, key_padding);
        x_ = x;
        padding_.assign(key_padding.begin(), key_padding.end());
        forwarded_ = true;
        seq_ = seq_len;
        if (!frozen_) ++calls_;  // a new dropout mask per forward
        // The projections through the library's GEMM (detail/gemm.hpp: threaded tiles, or the BLAS
        // backend); a weight's value_t() is its transpose as a column-major view.
        auto& qkv = qkv_.resize(3 * dim_, x.cols());
        qkv.colwise() = in_b_.value_vec();
        detail::matmul<T>(qkv, in_w_.value_t(), true, x, false, /*accumulate=*/true);
        auto& o = o_.resize(dim_, x.cols());
        auto& lse = lse_.resize(heads_, x.cols());
        for_each_head(x.cols() / seq_len, [&](Index b, Index h, Scratch& s) { attend(qkv, b, h, o, lse, s); });
        auto& y = y_.resize(dim_, x.cols());
        y.colwise() = out_b_.value_vec();
        detail::matmul<T>(y, out_w_.value_t(), true, o, false, true);
        return y;
    }

    /// dx from dy (dim x B S); adds every parameter's gradient. Recomputes the attention weights.
    const MatrixView<T>& backward(const ConstView<T>& dy) {
        detail::require(forwarded_, name_, "::backward: no forward before it");
        detail::check_shape(dy, dim_, x_.cols(), name_, "backward", "output gradient");
        const auto& o = o_.view();
        auto dw_out = out_w_.grad_t();  // dW^T = o dy^T
        detail::matmul<T>(dw_out, o, false, dy, true, true);
        detail::add_row_sums(dy, out_b_.grad_vec());
        auto& d_o = do_.resize(dim_, dy.cols());
        detail::matmul<T>(d_o, out_w_.value_t(), false, dy, false);
        auto& dqkv = dqkv_.zeros(3 * dim_, dy.cols());
        for_each_head(dy.cols() / seq_, [&](Index b, Index h, Scratch& s) { attend_backward(b, h, d_o, dqkv, s); });
        auto dw_in = in_w_.grad_t();
        detail::matmul<T>(dw_in, x_, false, dqkv, true, true);
        const ConstView<T> dq = dqkv;
        detail::add_row_sums(dq, in_b_.grad_vec());
        auto& dx = dx_.resize(dim_, dy.cols());
        detail::matmul<T>(dx, in_w_.value_t(), false, dqkv, false);
        return dx;
    }

    const MatrixView<T>& output() const { return y_.view(); }

    /// The keys and values of B sequences decoded so far (one layer's KV cache): K and V are
    /// dim x (B capacity), sequence b's token t in column b capacity + t.
    struct Cache {
        Matrix<T> k, v;
        Index batch = 0, capacity = 0, length = 0;
        void reset(Index dim, Index sequences, Index max_length) {
            batch = sequences, capacity = max_length, length = 0;
            k.resize(dim, sequences * max_length);
            v.resize(dim, sequences * max_length);
        }
    };

    /// Incremental decoding, evaluation semantics (no dropout): x is dim x B, the next token of each
    /// of the B sequences; its key and value join the cache and its query attends to every cached
    /// token of its sequence (causal by construction). Returns dim x B, what forward gives at that
    /// position. `cache` must have been reset for B sequences; no key padding.
    const MatrixView<T>& decode(const ConstView<T>& x, Cache& cache) {
        detail::check_rows(x, dim_, name_, "decode");
        detail::require(x.cols() == cache.batch, name_, "::decode: ", x.cols(), " tokens for a cache of ", cache.batch, " sequences");
        detail::require(cache.length < cache.capacity, name_, "::decode: the cache is full (", cache.capacity, " tokens)");
        const Index dh = dim_ / heads_, len = cache.length + 1;
        const T scale = T(1) / std::sqrt(T(dh));
        auto& qkv = qkv_.resize(3 * dim_, x.cols());
        qkv.noalias() = in_w_.value * x;
        qkv.colwise() += in_b_.value_vec();
        auto& o = o_.resize(dim_, x.cols());
        for (Index b = 0; b < x.cols(); ++b) {
            const Index c0 = b * cache.capacity;
            cache.k.col(c0 + cache.length) = qkv.col(b).segment(dim_, dim_);
            cache.v.col(c0 + cache.length) = qkv.col(b).segment(2 * dim_, dim_);
            for (Index h = 0; h < heads_; ++h) {
                const auto keys = cache.k.block(h * dh, c0, dh, len), values = cache.v.block(h * dh, c0, dh, len);
                Vector<T>& p = decode_p_;  // reused: no allocation per token once grown
                p.noalias() = (keys.transpose() * qkv.col(b).segment(h * dh, dh)) * scale;
                p = (p.array() - p.maxCoeff()).exp().matrix();
                p /= p.sum();
                o.col(b).segment(h * dh, dh).noalias() = values * p;
            }
        }
        ++cache.length;
        auto& y = y_.resize(dim_, x.cols());
        y.noalias() = out_w_.value * o;
        y.colwise() += out_b_.value_vec();
        return y;
    }

private:
    static constexpr Index kBlock = 64;  // keys per block of the online softmax

    /// One thread's scratch: a block of scores and the per-query running statistics.
    struct Scratch {
        Buffer<T> scores, dscores, dropped;
        Vector<T> running_max, running_sum, delta;
    };

    /// f(b, h, scratch) for every head of every sequence, the (sequence, head) pairs cut into one
    /// contiguous range per thread, each range with its own scratch. A pair's arithmetic does not
    /// depend on which thread runs it: the same bits on any thread count.
    template <class F>
    void for_each_head(Index sequences, F&& f) {
        const Index pairs = sequences * heads_, dh = dim_ / heads_;
        const double flops = 4.0 * double(pairs) * double(seq_) * double(seq_) * double(dh);
        const Index threads = detail::threads_for(flops, pairs);
        const Index per = (pairs + threads - 1) / threads;
        if (scratch_.size() < std::size_t(threads)) scratch_.resize(std::size_t(threads));
        parallel_for(pairs, per, flops, [&](Index begin, Index end) {
            Scratch& s = scratch_[std::size_t(begin / per)];
            for (Index i = begin; i < end; ++i) f(i / heads_, i % heads_, s);
        });
    }

    void check(const ConstView<T>& x, Index seq_len, const std::vector<std::uint8_t>& key_padding) const {
        detail::check_rows(x, dim_, name_, "forward");
        detail::require(seq_len > 0, name_, ": seq_len must be positive, got ", seq_len);
        detail::require(x.cols() % seq_len == 0, name_, ": ", x.cols(), " tokens are not whole sequences of ", seq_len);
        if (!key_padding.empty() && Index(key_padding.size()) != x.cols())
            throw shape_error(detail::concat(name_, ": the key padding mask has ", key_padding.size(), " flags for ", x.cols(), " tokens"));
    }

    /// Whether dropout keeps weight (b, h, i, j) in this forward: a hash of the position and the call.
    T keep(Index b, Index h, Index i, Index j) const {
        if (!training_ || dropout_ == 0.0) return T(1);
        std::uint64_t z = seed_ ^ (std::uint64_t(calls_) * 0x9E3779B97F4A7C15ULL) ^
                          (std::uint64_t(((b * heads_ + h) * seq_ + i) * seq_ + j) * 0xBF58476D1CE4E5B9ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        const double u = double(z >> 11) * 0x1.0p-53;
        return u < dropout_ ? T(0) : T(1.0 / (1.0 - dropout_));
    }

    /// With a causal mask, the queries that can see any key of the block starting at j0: [j0, s).
    Index first_query(Index j0) const { return causal_ ? j0 : 0; }
    /// Whether dropout is on in this pass (keep() is 1 everywhere otherwise).
    bool dropping() const { return training_ && dropout_ > 0.0; }
    /// Scores column `col` of query i over the keys [j0, j0 + bk): sets the masked ones to -inf and
    /// returns how many leading keys the causal mask leaves (the rest are -inf).
    template <class Col>
    Index mask_column(Col&& col, Index b, Index i, Index j0, Index bk) const {
        const Index lim = causal_ ? std::min(bk, i - j0 + 1) : bk;
        col.tail(bk - lim).setConstant(-std::numeric_limits<T>::infinity());
        if (!padding_.empty())
            for (Index j = 0; j < lim; ++j)
                if (padding_[std::size_t(b * seq_ + j0 + j)] != 0) col(j) = -std::numeric_limits<T>::infinity();
        return lim;
    }
    /// exp(col - m) over the first lim keys (vectorised), masked keys exactly 0.
    template <class Col>
    void exp_column(Col&& col, T m, Index b, Index j0, Index lim) const {
        col.head(lim) = (col.head(lim).array() - m).exp();
        col.tail(col.size() - lim).setZero();
        if (!padding_.empty())
            for (Index j = 0; j < lim; ++j)
                if (padding_[std::size_t(b * seq_ + j0 + j)] != 0) col(j) = T(0);
    }

    /// Head h of sequence b: O = V softmax(K^T Q / sqrt(dh))^T over key blocks, with the running
    /// maximum and sum of every query (online softmax); keeps log-sum-exp per query for backward.
    /// A causal mask skips the queries before a block (they see none of its keys).
    void attend(const MatrixView<T>& qkv, Index b, Index h, MatrixView<T>& o, MatrixView<T>& lse, Scratch& st) const {
        const Index dh = dim_ / heads_, s = seq_, c0 = b * s;
        const T scale = T(1) / std::sqrt(T(dh));
        const auto q = qkv.block(h * dh, c0, dh, s), k = qkv.block(dim_ + h * dh, c0, dh, s), v = qkv.block(2 * dim_ + h * dh, c0, dh, s);
        auto acc = o.block(h * dh, c0, dh, s);
        acc.setZero();
        Vector<T>& running_max = st.running_max;
        Vector<T>& running_sum = st.running_sum;
        running_max.setConstant(s, -std::numeric_limits<T>::infinity());
        running_sum.setZero(s);
        for (Index j0 = 0; j0 < s; j0 += kBlock) {
            const Index bk = std::min(kBlock, s - j0), q0 = first_query(j0), nq = s - q0;
            auto& sc = st.scores.resize(bk, nq);  // keys x queries
            sc.noalias() = (k.middleCols(j0, bk).transpose() * q.middleCols(q0, nq)) * scale;
            for (Index i = q0; i < s; ++i) {
                auto col = sc.col(i - q0);
                const Index lim = mask_column(col, b, i, j0, bk);
                const T m = std::max(running_max(i), col.maxCoeff());
                if (m == -std::numeric_limits<T>::infinity()) {  // every key so far masked
                    col.setZero();
                    continue;
                }
                const T rescale = running_max(i) == -std::numeric_limits<T>::infinity() ? T(0) : std::exp(running_max(i) - m);
                exp_column(col, m, b, j0, lim);
                running_sum(i) = running_sum(i) * rescale + col.sum();
                if (dropping())
                    for (Index j = 0; j < bk; ++j) col(j) *= keep(b, h, i, j0 + j);
                acc.col(i) *= rescale;
                running_max(i) = m;
            }
            acc.middleCols(q0, nq).noalias() += v.middleCols(j0, bk) * sc;
        }
        for (Index i = 0; i < s; ++i) {
            if (running_sum(i) > 0) {
                acc.col(i) /= running_sum(i);
                lse(h, c0 + i) = running_max(i) + std::log(running_sum(i));
            } else {
                acc.col(i).setZero();  // no key to attend to
                lse(h, c0 + i) = std::numeric_limits<T>::infinity();
            }
        }
    }

    /// Backward of one head of one sequence: P recomputed block by block from the log-sum-exp;
    /// dV = dO (D P)^T, dS = P (dP~ - rowdot(dO, O)), dQ = K dS / sqrt(dh), dK = Q dS^T / sqrt(dh)
    /// (D the dropout mask, dP~ = D (V^T dO)). Causal: the queries before a block are skipped.
    void attend_backward(Index b, Index h, const MatrixView<T>& d_o, MatrixView<T>& dqkv, Scratch& st) const {
        const Index dh = dim_ / heads_, s = seq_, c0 = b * s;
        const T scale = T(1) / std::sqrt(T(dh));
        const auto& qkv = qkv_.view();
        const auto q = qkv.block(h * dh, c0, dh, s), k = qkv.block(dim_ + h * dh, c0, dh, s), v = qkv.block(2 * dim_ + h * dh, c0, dh, s);
        const auto dout = d_o.block(h * dh, c0, dh, s);
        const auto out = o_.view().block(h * dh, c0, dh, s);
        auto dq = dqkv.block(h * dh, c0, dh, s);
        auto dk = dqkv.block(dim_ + h * dh, c0, dh, s);
        auto dv = dqkv.block(2 * dim_ + h * dh, c0, dh, s);
        Vector<T>& delta = st.delta;
        delta.resize(s);
        for (Index i = 0; i < s; ++i) delta(i) = dout.col(i).dot(out.col(i));
        const bool drop = dropping();
        for (Index j0 = 0; j0 < s; j0 += kBlock) {
            const Index bk = std::min(kBlock, s - j0), q0 = first_query(j0), nq = s - q0;
            auto& p = st.scores.resize(bk, nq);  // P
            p.noalias() = (k.middleCols(j0, bk).transpose() * q.middleCols(q0, nq)) * scale;
            auto& dp = st.dscores.resize(bk, nq);
            dp.noalias() = v.middleCols(j0, bk).transpose() * dout.middleCols(q0, nq);  // dP~ before the dropout mask
            auto& pd = drop ? st.dropped.resize(bk, nq) : p;  // P with dropout (P itself without)
            for (Index i = q0; i < s; ++i) {
                auto pc = p.col(i - q0);
                auto dc = dp.col(i - q0);
                const T l = lse_.view()(h, c0 + i);
                if (!std::isfinite(l)) {  // the query saw no key
                    pc.setZero();
                    dc.setZero();
                    if (drop) pd.col(i - q0).setZero();
                    continue;
                }
                const Index lim = mask_column(pc, b, i, j0, bk);
                exp_column(pc, l, b, j0, lim);
                if (drop) {
                    for (Index j = 0; j < bk; ++j) {
                        const T kp = keep(b, h, i, j0 + j);
                        pd(j, i - q0) = pc(j) * kp;
                        dc(j) = pc(j) * (kp * dc(j) - delta(i));  // dS
                    }
                } else {
                    dc = pc.cwiseProduct((dc.array() - delta(i)).matrix());  // dS
                }
            }
            dv.middleCols(j0, bk).noalias() += dout.middleCols(q0, nq) * pd.transpose();
            dq.middleCols(q0, nq).noalias() += (k.middleCols(j0, bk) * dp) * scale;
            dk.middleCols(j0, bk).noalias() += (q.middleCols(q0, nq) * dp.transpose()) * scale;
        }
    }

    std::string name_;
    Index dim_, heads_;
    double dropout_;
    bool causal_;
    bool training_ = true, frozen_ = false;
    Param<T> in_w_, in_b_, out_w_, out_b_;
    std::uint64_t seed_ = 0x5EED;
    std::uint64_t calls_ = 0;
    ConstView<T> x_;
    std::vector<std::uint8_t> padding_;  // the key padding flags of the last forward
    bool forwarded_ = false;
    Index seq_ = 0;
    Buffer<T> qkv_, o_, lse_, y_, do_, dqkv_, dx_;
    std::vector<Scratch> scratch_;  // one per thread of for_each_head
    Vector<T> decode_p_;            // decode's attention weights of one head
};

}  // namespace moe
