#pragma once
// SparseMoE: a token-level mixture of experts with top-k routing (Shazeer 2017, Switch, Mixtral).
//
//   x (d x N) ─► router logits (E x N) ─► [+ noise] ─► softmax p ─► top-k per token, weights w
//             ─► dispatch: a counting sort of the kept (token, expert) pairs into contiguous
//                per-expert blocks of columns, X_p = x gathered (d x S)
//             ─► expert e on its block: W2_e act(W1_e X_e + b1_e) + b2_e, one GEMM per layer
//             ─► combine: y_t = sum over t's kept pairs of w * out (gate-weighted scatter-add)
//
// Backward runs through the same permutation. Within an expert's block the tokens keep their order,
// so with k = E and no capacity every block is x itself and no gather is done: that is the dense
// (softmax-weighted, all experts) layer, which the benchmarks compare against.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "moe/core/buffer.hpp"
#include "moe/core/errors.hpp"
#include "moe/core/parameters.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/threads.hpp"
#include "moe/core/view.hpp"
#include "moe/detail/gemm.hpp"
#include "moe/detail/row_sums.hpp"
#include "moe/layers/activations.hpp"
#include "moe/layers/softmax.hpp"
#include "moe/routing/aux_losses.hpp"
#include "moe/routing/routing_stats.hpp"
#include "moe/routing/top_k.hpp"

namespace moe {

/// What happens to a token none of whose assignments fit under the capacity.
enum class DroppedTokens {
    zero,        ///< its output is zero (add a residual outside the layer, as Switch does)
    passthrough  ///< its output is its input
};

/// Configuration of a SparseMoE layer, checked when it is built.
struct SparseMoESpec {
    Index dim = 0;      ///< d: width of tokens in and out
    Index ffn = 0;      ///< hidden width of each expert (Linear d -> ffn, activation, Linear ffn -> d)
    Index experts = 0;  ///< E
    Index k = 2;        ///< experts per token, 1 <= k <= E
    ActivationKind activation = ActivationKind::gelu;
    /// true: the k chosen probabilities are renormalised to sum to 1 (Mixtral, Shazeer's softmax over
    /// the top k). false: the raw softmax probabilities (Switch top-1), so the router also learns
    /// from the task loss through the probability's size.
    bool renormalize = true;
    /// Noisy top-k (Shazeer 2017): logits + N(0, 1) * softplus(W_noise x), in training only.
    bool noisy = false;
    bool router_bias = false;
    /// Capacity per expert = ceil(capacity_factor * N k / E) assignments; 0 = dropless. When an
    /// expert is over capacity, the first choices of all tokens win over second choices, and
    /// earlier tokens over later ones.
    double capacity_factor = 0.0;
    DroppedTokens dropped = DroppedTokens::zero;
    /// Coefficients of the auxiliary losses added to the objective whose gradient backward() gives.
    double balance_coef = 0.0;     ///< Switch load balancing E sum_i f_i P_i
    double importance_coef = 0.0;  ///< Shazeer's CV^2 of the importance (sum of gate weights per expert)
    double load_coef = 0.0;        ///< Shazeer's CV^2 of the smooth load estimate (needs noisy)
    double z_coef = 0.0;           ///< ST-MoE router z-loss
    std::uint64_t noise_seed = 0;  ///< seeds the router noise
};

/// A token-level top-k mixture of E experts. Shapes: x is d x N (one token per column), y is d x N.
/// forward() also computes the auxiliary losses (aux_loss()) and the routing statistics (stats());
/// backward(dy) gives the gradients of sum(dy .* y) + aux_loss(): the aux losses' gradients are
/// included, so add aux_loss() to the loss you report. Parameters: "router.weight" (E x d),
/// "router.bias" (E, with router_bias), "noise.weight" (E x d, noisy), and per expert e
/// "experts.{e}.0.weight" (ffn x d), "experts.{e}.0.bias", "experts.{e}.2.weight" (d x ffn),
/// "experts.{e}.2.bias", as a PyTorch ModuleList of nn.Sequential(Linear, act, Linear).
template <class T>
class SparseMoE {
public:
    using Scalar = T;
    using Spec = SparseMoESpec;

    explicit SparseMoE(const SparseMoESpec& spec, std::string name = "moe::SparseMoE")
        : spec_(spec), name_(std::move(name)), router_w_(spec.experts, spec.dim), router_b_(spec.experts, 1),
          noise_w_(spec.experts, spec.dim), w1_(spec.experts * spec.ffn, spec.dim, spec.experts),
          b1_(spec.experts * spec.ffn, 1, spec.experts), w2_(spec.experts * spec.dim, spec.ffn, spec.experts),
          b2_(spec.experts * spec.dim, 1, spec.experts), noise_rng_(spec.noise_seed) {
        check_scalar<T>();
        const auto& s = spec_;
        detail::require(s.dim > 0 && s.ffn > 0, name_, ": dim and ffn must be positive, got ", s.dim, " and ", s.ffn);
        detail::require(s.experts > 0, name_, ": experts must be positive, got ", s.experts);
        detail::require(s.k >= 1 && s.k <= s.experts, name_, ": k must be in [1, experts = ", s.experts, "], got ", s.k);
        detail::require(s.capacity_factor == 0.0 || (s.capacity_factor > 0.0 && std::isfinite(s.capacity_factor)), name_,
                        ": capacity_factor must be positive (or 0 for dropless), got ", s.capacity_factor);
        for (double c : {s.balance_coef, s.importance_coef, s.load_coef, s.z_coef})
            detail::require(c >= 0.0 && std::isfinite(c), name_, ": aux loss coefficients must be >= 0, got ", c);
        detail::require(s.load_coef == 0.0 || s.noisy, name_, ": load_coef needs a noisy router (the load estimate is the ",
                        "probability under the noise), got load_coef ", s.load_coef, " with noisy = false");
    }

    const SparseMoESpec& spec() const { return spec_; }
    const std::string& name() const { return name_; }
    Index in_features() const { return spec_.dim; }
    Index experts() const { return spec_.experts; }
    /// True when every expert sees every token (k = E, no capacity): the dense layer.
    bool dense() const { return spec_.k == spec_.experts && spec_.capacity_factor == 0.0; }

    /// Routing statistics and unweighted aux losses of the last forward.
    const RoutingStats& stats() const { return stats_; }
    /// The weighted sum of the aux losses of the last forward.
    double aux_loss() const { return aux_loss_; }
    /// Expert chosen by token t at rank r (0 = best) in the last forward, and its gate weight.
    Index choice(Index r, Index t) const { return choice_.view()(r, t); }
    T gate_weight(Index r, Index t) const { return weight_.view()(r, t); }

    /// Keep the last noise draw (for gradient checks); off by default.
    void freeze_noise(bool on) { noise_frozen_ = on; }

    const MatrixView<T>& forward(const ConstView<T>& x) {
        detail::check_rows(x, spec_.dim, name_, "forward");
        detail::require(x.cols() > 0, name_, "::forward: no tokens");
        x_ = x;
        route(x);
        dispatch();
        run_experts();
        combine();
        compute_aux();
        return y_.view();
    }

    /// Adds the parameter gradients of sum(dy .* y) + aux_loss() and returns dx (d x N).
    const MatrixView<T>& backward(const ConstView<T>& dy) {
        const Index n = x_.cols(), d = spec_.dim, k = spec_.k;
        detail::check_shape(dy, d, n, name_, "backward", "output gradient");
        // Gradients of the gate weights, and of every kept expert output (w dy).
        auto& dw = dweight_.resize(k, n);
        auto& dout = slot_buffer(dout_, d);
        detail::for_each_sample(n, double(k * d), [&](Index t) {
            for (Index r = 0; r < k; ++r) {
                const Index s = slot_of_[std::size_t(r + k * t)];
                if (s < 0) {
                    dw(r, t) = T(0);
                    continue;
                }
                dw(r, t) = out_.view().col(s).dot(dy.col(t));
                dout.col(s) = weight_.view()(r, t) * dy.col(t);
            }
        });
        backward_experts(dout);
        auto& dx = dx_.resize(d, n);
        if (!dense()) {
            detail::for_each_sample(n, double(k * d), [&](Index t) {
                dx.col(t).setZero();
                bool any = false;
                for (Index r = 0; r < k; ++r) {
                    const Index s = slot_of_[std::size_t(r + k * t)];
                    if (s >= 0) dx.col(t) += dxp_.view().col(s), any = true;
                }
                if (!any && spec_.dropped == DroppedTokens::passthrough) dx.col(t) += dy.col(t);
            });
        }
        backward_router(dw, dx);
        return dx;
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        f(join_name(prefix, "router.weight"), router_w_);
        if (spec_.router_bias) f(join_name(prefix, "router.bias"), router_b_);
        if (spec_.noisy) f(join_name(prefix, "noise.weight"), noise_w_);
        f(join_name(prefix, "experts.{}.0.weight"), w1_);
        f(join_name(prefix, "experts.{}.0.bias"), b1_);
        f(join_name(prefix, "experts.{}.2.weight"), w2_);
        f(join_name(prefix, "experts.{}.2.bias"), b2_);
    }

    /// PyTorch's nn.Linear defaults for the router and the experts; the noise weight starts at 0
    /// (noise std softplus(0) = 0.69), as in Shazeer's reference code.
    void reset_parameters(Rng& rng) {
        auto uniform = [&](Param<T>& p, Index offset, Index count, Index fan_in) {
            const double bound = 1.0 / std::sqrt(double(fan_in));
            T* v = p.value_vec().data() + offset;
            for (Index i = 0; i < count; ++i) v[i] = T(rng.uniform(-bound, bound));
        };
        const Index d = spec_.dim, h = spec_.ffn;
        uniform(router_w_, 0, router_w_.size(), d);
        if (spec_.router_bias) uniform(router_b_, 0, router_b_.size(), d);
        if (spec_.noisy) noise_w_.value_vec().setZero();
        for (Index e = 0; e < spec_.experts; ++e) {
            uniform(w1_, e * h * d, h * d, d);
            uniform(b1_, e * h, h, d);
            uniform(w2_, e * d * h, d * h, h);
            uniform(b2_, e * d, d, h);
        }
    }

    void set_training(bool on) { training_ = on; }
    void train() { training_ = true; }
    /// Evaluation mode: no router noise (capacity and aux losses still apply).
    void eval() { training_ = false; }
    bool training() const { return training_; }
    const MatrixView<T>& output() const { return y_.view(); }

private:
    // ---- forward ---------------------------------------------------------------------------
    void linear_rows(const Param<T>& w, const Param<T>* b, const ConstView<T>& x, MatrixView<T>& out) const {
        if (b) out.colwise() = b->value_vec();
        else out.setZero();
        detail::gemm<T>(true, false, spec_.experts, x.cols(), spec_.dim, T(1), w.value_vec().data(), spec_.dim, x.data(),
                        x.outerStride(), true, out.data(), out.outerStride());
    }

    /// Logits, noise, softmax, the top k per token and their gate weights.
    void route(const ConstView<T>& x) {
        const Index e = spec_.experts, n = x.cols(), k = spec_.k;
        auto& logits = logits_.resize(e, n);
        linear_rows(router_w_, spec_.router_bias ? &router_b_ : nullptr, x, logits);
        const bool noise_on = spec_.noisy && training_;
        auto& h = noisy_.resize(e, n);
        if (noise_on) {
            auto& raw = noise_raw_.resize(e, n);
            linear_rows(noise_w_, nullptr, x, raw);
            auto& eps = eps_.view();
            if (!noise_frozen_ || eps.rows() != e || eps.cols() != n) {
                auto& fresh = eps_.resize(e, n);
                for (Index i = 0; i < fresh.size(); ++i) fresh.data()[i] = T(noise_rng_.normal());
            }
            auto& sd = noise_std_.resize(e, n);
            for (Index i = 0; i < sd.size(); ++i) sd.data()[i] = softplus(raw.data()[i]);
            h = logits + eps_.view().cwiseProduct(sd);
        } else {
            h = logits;
        }
        auto& p = probs_.resize(e, n);
        detail::softmax_columns<T>(h, p);
        auto& choice = choice_.resize(k, n);
        auto& weight = weight_.resize(k, n);
        detail::for_each_sample(n, double(e * k), [&](Index t) {
            Index* best = &choice(0, t);
            detail::select_top_k(e, k, [&](Index i) { return h(i, t); }, best);
            detail::top_k_weights<T>(k, best, [&](Index i) { return p(i, t); }, spec_.renormalize,
                                     [&](Index r) -> T& { return weight(r, t); });
        });
    }

    static T softplus(T v) { return v > T(20) ? v : std::log1p(std::exp(v)); }
    static T sigmoid(T v) { return v >= T(0) ? T(1) / (T(1) + std::exp(-v)) : std::exp(v) / (T(1) + std::exp(v)); }

    /// Counting sort of the kept (token, expert) pairs into per-expert blocks of slots.
    void dispatch() {
        const Index e = spec_.experts, n = x_.cols(), k = spec_.k;
        const auto& choice = choice_.view();
        auto& routed = stats_.routed;
        routed.assign(std::size_t(e), 0);
        for (Index t = 0; t < n; ++t)
            for (Index r = 0; r < k; ++r) ++routed[std::size_t(choice(r, t))];
        slot_of_.resize(std::size_t(n * k));
        // Which assignments run: under a capacity, rank-major priority (all first choices, then all
        // second choices, ...), tokens in order within a rank.
        stats_.kept.assign(std::size_t(e), 0);
        const Index capacity = spec_.capacity_factor > 0.0
                                   ? Index(std::ceil(spec_.capacity_factor * double(n) * double(k) / double(e)))
                                   : n * k;
        for (Index r = 0; r < k; ++r)
            for (Index t = 0; t < n; ++t) {
                auto& kept = stats_.kept[std::size_t(choice(r, t))];
                const bool runs = kept < capacity;
                kept += runs;
                slot_of_[std::size_t(r + k * t)] = runs ? 0 : -1;
            }
        offset_.resize(std::size_t(e + 1));
        offset_[0] = 0;
        for (Index i = 0; i < e; ++i) offset_[std::size_t(i + 1)] = offset_[std::size_t(i)] + stats_.kept[std::size_t(i)];
        slots_ = offset_[std::size_t(e)];
        // Slots token-major within each block: tokens keep their order (with k = E, block e is x).
        fill_.assign(offset_.begin(), offset_.end() - 1);
        token_of_.resize(std::size_t(n * k));  // the most slots there can be: no regrowth
        for (Index t = 0; t < n; ++t)
            for (Index r = 0; r < k; ++r) {
                auto& s = slot_of_[std::size_t(r + k * t)];
                if (s < 0) continue;
                s = fill_[std::size_t(choice(r, t))]++;
                token_of_[std::size_t(s)] = t;
            }
        if (!dense()) {
            auto& xp = slot_buffer(xp_, spec_.dim);
            detail::for_each_sample(slots_, double(spec_.dim), [&](Index s) { xp.col(s) = x_.col(token_of_[std::size_t(s)]); });
        }
    }

    /// A rows x slots buffer whose storage is sized for the most slots a batch of this size can
    /// have (N k), so that a varying number of kept assignments never reallocates.
    MatrixView<T>& slot_buffer(Buffer<T>& b, Index rows) const {
        b.resize(rows, x_.cols() * spec_.k);
        return b.resize(rows, slots_);
    }

    /// Input block of expert i: its gathered columns, or x itself in the dense case.
    ConstView<T> expert_input(Index i) const {
        const Index begin = offset_[std::size_t(i)], len = offset_[std::size_t(i + 1)] - begin;
        if (dense()) return ConstView<T>(x_.data(), spec_.dim, len, x_.outerStride());
        return ConstView<T>(xp_.view().data() + begin * spec_.dim, spec_.dim, len, spec_.dim);
    }

    /// Runs f(i) for every expert: over threads by expert when there are enough experts and work
    /// (each expert's GEMMs then serial), else one after another with threaded GEMMs.
    template <class F>
    void for_each_expert(double work, F&& f) const {
#ifdef _OPENMP
        const int threads = max_threads();
        if (threads > 1 && spec_.experts >= 2 * threads && work >= detail::kParallelWork) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
            for (Index i = 0; i < spec_.experts; ++i) f(i);
            return;
        }
#endif
        (void)work;
        for (Index i = 0; i < spec_.experts; ++i) f(i);
    }

    void run_experts() {
        const Index d = spec_.dim, h = spec_.ffn;
        auto& pre = slot_buffer(pre_, h);
        auto& act = slot_buffer(act_, h);
        auto& out = slot_buffer(out_, d);
        for_each_expert(2.0 * double(d) * double(h) * double(slots_), [&](Index i) {
            const Index begin = offset_[std::size_t(i)], len = offset_[std::size_t(i + 1)] - begin;
            if (len == 0) return;
            const ConstView<T> xin = expert_input(i);
            MatrixView<T> pre_i(pre.data() + begin * h, h, len), act_i(act.data() + begin * h, h, len),
                out_i(out.data() + begin * d, d, len);
            pre_i.colwise() = b1_.value_vec().segment(i * h, h);
            detail::gemm<T>(true, false, h, len, d, T(1), w1_.value_vec().data() + i * h * d, d, xin.data(),
                            xin.outerStride(), true, pre_i.data(), h);
            detail::activation_forward(spec_.activation, ConstView<T>(pre_i), act_i);
            out_i.colwise() = b2_.value_vec().segment(i * d, d);
            detail::gemm<T>(true, false, d, len, h, T(1), w2_.value_vec().data() + i * d * h, h, act_i.data(), h, true,
                            out_i.data(), d);
        });
    }

    void combine() {
        const Index n = x_.cols(), k = spec_.k, d = spec_.dim;
        auto& y = y_.resize(d, n);
        const auto& out = out_.view();
        detail::for_each_sample(n, double(k * d), [&](Index t) {
            y.col(t).setZero();
            bool any = false;
            for (Index r = 0; r < k; ++r) {
                const Index s = slot_of_[std::size_t(r + k * t)];
                if (s >= 0) y.col(t) += weight_.view()(r, t) * out.col(s), any = true;
            }
            if (!any && spec_.dropped == DroppedTokens::passthrough) y.col(t) = x_.col(t);
        });
    }

    /// Statistics and aux losses (values; gradients are added in backward).
    void compute_aux() {
        const Index e = spec_.experts, n = x_.cols(), k = spec_.k;
        RoutingStats& st = stats_;
        st.tokens = n;
        st.dropped = n * k - slots_;
        st.dropped_tokens = 0;
        for (Index t = 0; t < n; ++t) {
            bool any = false;
            for (Index r = 0; r < k; ++r) any = any || slot_of_[std::size_t(r + k * t)] >= 0;
            st.dropped_tokens += !any;
        }
        st.dead_experts = Index(std::count(st.routed.begin(), st.routed.end(), Index(0)));
        const double mean = double(n * k) / double(e);
        st.load_balance = double(*std::max_element(st.routed.begin(), st.routed.end())) / mean;
        const auto& p = probs_.view();
        double ent = 0;
        for (Index i = 0; i < p.size(); ++i) {
            const double v = double(p.data()[i]);
            if (v > 0) ent -= v * std::log(v);
        }
        st.entropy = ent / double(n);
        st.balance_loss = switch_balance_loss<T>(p, st.routed, k, 0.0, nullptr);
        importance(importance_);
        st.importance_loss = cv_squared(importance_, 0.0, nullptr);
        st.load_loss = 0;
        if (spec_.noisy && training_ && k < e) {
            smooth_load(nullptr);
            st.load_loss = cv_squared(load_, 0.0, nullptr);
        }
        st.z_loss = router_z_loss<T>(logits_.view(), 0.0, nullptr);
        aux_loss_ = spec_.balance_coef * st.balance_loss + spec_.importance_coef * st.importance_loss +
                    spec_.load_coef * st.load_loss + spec_.z_coef * st.z_loss;
    }

    /// Importance of each expert: the sum over tokens of its gate weights (Shazeer 2017).
    void importance(std::vector<double>& imp) const {
        imp.assign(std::size_t(spec_.experts), 0.0);
        for (Index t = 0; t < x_.cols(); ++t)
            for (Index r = 0; r < spec_.k; ++r) imp[std::size_t(choice_.view()(r, t))] += double(weight_.view()(r, t));
    }

    /// The k-th and (k+1)-th largest noisy logits of token t.
    std::pair<Index, Index> thresholds(Index t) const {
        const auto& h = noisy_.view();
        const Index kth = choice_.view()(spec_.k - 1, t);
        Index next = -1;  // the best expert outside the top k
        for (Index i = 0; i < spec_.experts; ++i) {
            bool chosen = false;
            for (Index r = 0; r < spec_.k; ++r) chosen = chosen || choice_.view()(r, t) == i;
            if (!chosen && (next < 0 || h(i, t) > h(next, t))) next = i;
        }
        return {kth, next};
    }

    /// Shazeer's smooth load: load_i = sum_t P(t, i), P(t, i) = Phi((clean_i - thr) / std_i), thr the
    /// k-th largest noisy logit of the others: the (k+1)-th if i is in the top k, else the k-th.
    /// With dload, adds the gradients into dclean (dlogits_), dstd_ and dh (dnoisy_).
    void smooth_load(const std::vector<double>* dload) {
        const Index e = spec_.experts, n = x_.cols();
        const auto& clean = logits_.view();
        const auto& h = noisy_.view();
        const auto& sd = noise_std_.view();
        if (!dload) load_.assign(std::size_t(e), 0.0);
        for (Index t = 0; t < n; ++t) {
            const auto [kth, next] = thresholds(t);
            for (Index i = 0; i < e; ++i) {
                bool chosen = false;
                for (Index r = 0; r < spec_.k; ++r) chosen = chosen || choice_.view()(r, t) == i;
                const Index thr_i = chosen ? next : kth;
                const double s = double(sd(i, t)), z = (double(clean(i, t)) - double(h(thr_i, t))) / s;
                if (!dload) {
                    load_[std::size_t(i)] += 0.5 * std::erfc(-z / std::sqrt(2.0));
                    continue;
                }
                const double g = (*dload)[std::size_t(i)] * std::exp(-0.5 * z * z) / 2.5066282746310002;
                dlogits_.view()(i, t) += T(g / s);
                dnoisy_.view()(thr_i, t) -= T(g / s);
                dstd_.view()(i, t) -= T(g * z / s);
            }
        }
    }

    // ---- backward --------------------------------------------------------------------------
    void backward_experts(const MatrixView<T>& dout) {
        const Index d = spec_.dim, h = spec_.ffn, n = x_.cols();
        auto& dact = slot_buffer(dact_, h);
        if (dense()) {
            auto& dx = dx_.resize(d, n);
            dx.setZero();
        } else {
            slot_buffer(dxp_, d);
        }
        T* dw1 = w1_.grad_vec().data();
        T* dw2 = w2_.grad_vec().data();
        // In the dense case every expert adds into dx, so the experts run one after another there.
        auto body = [&](Index i) {
            const Index begin = offset_[std::size_t(i)], len = offset_[std::size_t(i + 1)] - begin;
            if (len == 0) return;
            const ConstView<T> xin = expert_input(i);
            const ConstView<T> dout_i(dout.data() + begin * d, d, len);
            const ConstView<T> pre_i(pre_.view().data() + begin * h, h, len), act_i(act_.view().data() + begin * h, h, len);
            MatrixView<T> dact_i(dact.data() + begin * h, h, len);
            detail::add_row_sums(dout_i, b2_.grad_vec().segment(i * d, d));
            detail::gemm<T>(false, true, h, d, len, T(1), act_i.data(), h, dout_i.data(), d, true, dw2 + i * d * h, h);
            detail::gemm<T>(false, false, h, len, d, T(1), w2_.value_vec().data() + i * d * h, h, dout_i.data(), d, false,
                            dact_i.data(), h);
            detail::activation_backward(spec_.activation, pre_i, act_i, ConstView<T>(dact_i), dact_i);
            detail::add_row_sums(ConstView<T>(dact_i), b1_.grad_vec().segment(i * h, h));
            detail::gemm<T>(false, true, d, h, len, T(1), xin.data(), xin.outerStride(), dact_i.data(), h, true,
                            dw1 + i * h * d, d);
            if (dense())
                detail::gemm<T>(false, false, d, len, h, T(1), w1_.value_vec().data() + i * h * d, d, dact_i.data(), h, true,
                                dx_.view().data(), d);
            else
                detail::gemm<T>(false, false, d, len, h, T(1), w1_.value_vec().data() + i * h * d, d, dact_i.data(), h, false,
                                dxp_.view().data() + begin * d, d);
        };
        if (dense())
            for (Index i = 0; i < spec_.experts; ++i) body(i);
        else
            for_each_expert(4.0 * double(d) * double(h) * double(slots_), body);
    }

    /// From the gate weights' gradients (and the aux losses) back to the router's parameters and dx.
    void backward_router(MatrixView<T>& dw, MatrixView<T>& dx) {
        const Index e = spec_.experts, n = x_.cols(), k = spec_.k;
        const auto& p = probs_.view();
        if (spec_.importance_coef > 0) {  // importance_ is the forward's
            dimportance_.assign(std::size_t(e), 0.0);
            cv_squared(importance_, spec_.importance_coef, &dimportance_);
            for (Index t = 0; t < n; ++t)
                for (Index r = 0; r < k; ++r) dw(r, t) += T(dimportance_[std::size_t(choice_.view()(r, t))]);
        }
        // Gate weights -> probabilities of the chosen experts.
        auto& dp = dprobs_.resize(e, n);
        dp.setZero();
        for (Index t = 0; t < n; ++t)
            detail::top_k_weights_backward<T>(
                k, &choice_.view()(0, t), [&](Index i) { return p(i, t); }, [&](Index r) { return weight_.view()(r, t); },
                [&](Index r) { return dw(r, t); }, spec_.renormalize, [&](Index i) -> T& { return dp(i, t); });
        if (spec_.balance_coef > 0) switch_balance_loss<T>(p, stats_.routed, k, spec_.balance_coef, &dp);
        auto& dh = dnoisy_.resize(e, n);
        detail::softmax_columns_backward<T>(p, dp, dh);
        auto& dl = dlogits_.resize(e, n);
        const bool noise_on = spec_.noisy && training_;
        if (noise_on) {
            auto& dstd = dstd_.resize(e, n);
            dstd.setZero();
            dl.setZero();
            if (spec_.load_coef > 0 && k < e) {  // load_ is the forward's
                dload_.assign(std::size_t(e), 0.0);
                cv_squared(load_, spec_.load_coef, &dload_);
                smooth_load(&dload_);
            }
            dl += dh;  // h = logits + eps .* std
            dstd += dh.cwiseProduct(eps_.view());
            auto& draw = dnoise_raw_.resize(e, n);
            const auto& raw = noise_raw_.view();
            for (Index i = 0; i < draw.size(); ++i) draw.data()[i] = dstd.data()[i] * sigmoid(raw.data()[i]);
        } else {
            dl = dh;
        }
        if (spec_.z_coef > 0) router_z_loss<T>(logits_.view(), spec_.z_coef, &dl);
        linear_rows_backward(router_w_, spec_.router_bias ? &router_b_ : nullptr, dl, dx);
        if (noise_on) linear_rows_backward(noise_w_, nullptr, dnoise_raw_.view(), dx);
    }

    void linear_rows_backward(Param<T>& w, Param<T>* b, const ConstView<T>& dl, MatrixView<T>& dx) {
        const Index e = spec_.experts, d = spec_.dim, n = x_.cols();
        if (b) detail::add_row_sums(dl, b->grad_vec());
        detail::gemm<T>(false, true, d, e, n, T(1), x_.data(), x_.outerStride(), dl.data(), e, true, w.grad_vec().data(), d);
        detail::gemm<T>(false, false, d, n, e, T(1), w.value_vec().data(), d, dl.data(), e, true, dx.data(), dx.outerStride());
    }

    SparseMoESpec spec_;
    std::string name_;
    Param<T> router_w_, router_b_, noise_w_, w1_, b1_, w2_, b2_;
    Rng noise_rng_;
    bool training_ = true, noise_frozen_ = false;

    ConstView<T> x_;
    Buffer<T> logits_, noise_raw_, eps_, noise_std_, noisy_, probs_, weight_;
    Buffer<Index> choice_;
    std::vector<Index> offset_, fill_, slot_of_, token_of_;  // per-expert counts live in stats_
    Index slots_ = 0;
    Buffer<T> xp_, pre_, act_, out_, y_;
    Buffer<T> dweight_, dout_, dact_, dxp_, dx_, dprobs_, dnoisy_, dlogits_, dstd_, dnoise_raw_;
    std::vector<double> importance_, dimportance_, load_, dload_;
    RoutingStats stats_;
    double aux_loss_ = 0;
};

}  // namespace moe
