#pragma once
// The top-k router of a token-level sparse mixture (Shazeer 2017, Switch, Mixtral): logits, noise,
// softmax, the k best experts per token and their gate weights, the auxiliary losses, and the
// backward of all of it. The dispatch of the chosen assignments is routing/dispatch.hpp's, the
// experts are the layer's (models/sparse_moe.hpp), the weighted sum routing/combine.hpp's.
//
//   logits = W_r x (+ b_r)                                   E x N, one GEMM
//   noisy  = logits + eps .* softplus(W_noise x)             training with `noisy` only; eps ~ N(0, 1)
//   p      = softmax(noisy) per token; choice = top k of noisy (ties: lower index)
//   w      = p of the chosen, renormalised to sum to 1 (Mixtral) or raw (Switch)
//
// Expert choice (Zhou et al. 2022) selects the other way round: each expert takes the c tokens of
// the highest p(e, t) (ties: lower token), w = p(e, t) of those. Every expert is full by
// construction, so no balancing loss is needed (only the z-loss applies); a token may get no expert.
// A token's routing then depends on the other tokens of the batch, later ones included: in a causal
// language model that is a look-ahead (the paper's caveat), fine for encoders and for ranking.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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
#include "moe/layers/softmax.hpp"
#include "moe/routing/aux_losses.hpp"
#include "moe/routing/routing_stats.hpp"
#include "moe/routing/top_k.hpp"

namespace moe {

/// Who chooses: tokens their top k experts, or experts their top c tokens.
enum class Routing { top_k, expert_choice };

/// What a router is: widths, k, the weight rule, noise, and the aux losses' coefficients.
struct RouterSpec {
    Index dim = 0;      ///< d: width of the tokens
    Index experts = 0;  ///< E
    Index k = 2;        ///< experts per token, 1 <= k <= E (top-k routing; expert choice does not use it)
    /// Expert choice takes no noise and no balance, importance or load loss (its load is balanced by
    /// construction); its weights are the raw probabilities (renormalize does not apply).
    Routing routing = Routing::top_k;
    /// true: the k chosen probabilities are renormalised to sum to 1 (Mixtral, Shazeer's softmax over
    /// the top k). false: the raw softmax probabilities (Switch top-1), so the router also learns
    /// from the task loss through the probability's size.
    bool renormalize = true;
    /// Noisy top-k (Shazeer 2017): logits + N(0, 1) * softplus(W_noise x), in training only.
    bool noisy = false;
    bool router_bias = false;
    /// Coefficients of the auxiliary losses added to the objective whose gradient backward() gives.
    double balance_coef = 0.0;     ///< Switch load balancing E sum_i f_i P_i
    double importance_coef = 0.0;  ///< Shazeer's CV^2 of the importance (sum of gate weights per expert)
    double load_coef = 0.0;        ///< Shazeer's CV^2 of the smooth load estimate (needs noisy)
    double z_coef = 0.0;           ///< ST-MoE router z-loss
    std::uint64_t noise_seed = 0;  ///< seeds the router noise
};

/// The router of a SparseMoE. Shapes: x is d x N; probabilities() E x N; top-k: choice() and
/// weights() are k x N (column t: token t's experts, best first, and their gate weights); expert
/// choice: c x E (column e: the tokens expert e took, in token order, and their gate weights). Parameters
/// "router.weight" (E x d), "router.bias" (E, with router_bias), "noise.weight" (E x d, noisy).
template <class T>
class TopKRouter {
public:
    using Scalar = T;

    TopKRouter(const RouterSpec& spec, std::string name)
        : spec_(spec), name_(std::move(name)), w_(spec.experts, spec.dim), b_(spec.experts, 1), noise_w_(spec.experts, spec.dim),
          noise_rng_(spec.noise_seed) {
        const auto& s = spec_;
        detail::require(s.dim > 0, name_, ": dim must be positive, got ", s.dim);
        detail::require(s.experts > 0, name_, ": experts must be positive, got ", s.experts);
        detail::require(s.k >= 1 && s.k <= s.experts, name_, ": k must be in [1, experts = ", s.experts, "], got ", s.k);
        for (double c : {s.balance_coef, s.importance_coef, s.load_coef, s.z_coef})
            detail::require(c >= 0.0 && std::isfinite(c), name_, ": aux loss coefficients must be >= 0, got ", c);
        detail::require(s.load_coef == 0.0 || s.noisy, name_, ": load_coef needs a noisy router (the load estimate is the ",
                        "probability under the noise), got load_coef ", s.load_coef, " with noisy = false");
        if (s.routing == Routing::expert_choice) {
            detail::require(!s.noisy, name_, ": expert-choice routing takes no router noise (noisy = true)");
            detail::require(s.balance_coef == 0.0 && s.importance_coef == 0.0 && s.load_coef == 0.0, name_,
                            ": expert-choice routing is balanced by construction and takes no balance, importance or load ",
                            "loss, got coefficients ", s.balance_coef, ", ", s.importance_coef, " and ", s.load_coef);
        }
    }

    const RouterSpec& spec() const { return spec_; }
    /// Top-k: expert indices (k x N); expert choice: token indices (c x E); of the last forward.
    Eigen::Map<const Matrix<Index>> choice() const { return {choice_.view().data(), choice_.view().rows(), choice_.cols()}; }
    const MatrixView<T>& weights() const { return weight_.view(); }
    const MatrixView<T>& probabilities() const { return probs_.view(); }
    /// The weighted sum of the aux losses of the last forward.
    double aux_loss() const { return aux_loss_; }

    /// Routes the tokens of x and computes the aux losses and the router's part of stats (tokens,
    /// routed, dead experts, load balance, entropy, the unweighted aux losses). Keeps a view of x.
    /// expert_capacity: c, the tokens each expert takes (expert choice only; 1 <= c <= N).
    void forward(const ConstView<T>& x, RoutingStats& stats, Index expert_capacity = 0) {
        const Index e = spec_.experts, n = x.cols(), k = spec_.k;
        x_ = x;
        auto& logits = logits_.resize(e, n);
        linear(w_, spec_.router_bias ? &b_ : nullptr, x, logits);
        auto& h = noisy_.resize(e, n);
        if (noise_on()) {
            auto& raw = noise_raw_.resize(e, n);
            linear(noise_w_, nullptr, x, raw);
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
        if (spec_.routing == Routing::expert_choice) {
            choose_tokens(expert_capacity);
            compute_aux(stats);
            return;
        }
        auto& choice = choice_.resize(k, n);
        auto& weight = weight_.resize(k, n);
        detail::for_each_sample(n, double(e * k), [&](Index t) {
            Index* best = &choice(0, t);
            detail::select_top_k(e, k, [&](Index i) { return h(i, t); }, best);
            detail::top_k_weights<T>(k, best, [&](Index i) { return p(i, t); }, spec_.renormalize,
                                     [&](Index r) -> T& { return weight(r, t); });
        });
        compute_aux(stats);
    }

    /// From dL/dweights (k x N; the importance loss's gradient is added to it) back to the router's
    /// parameters, including every aux loss's gradient; adds dL/dx to dx (d x N).
    void backward(MatrixView<T>& dw, MatrixView<T>& dx) {
        const Index e = spec_.experts, n = x_.cols(), k = spec_.k;
        const auto& p = probs_.view();
        const auto choice = this->choice();
        if (spec_.importance_coef > 0) {  // importance_ is the forward's
            dimportance_.assign(std::size_t(e), 0.0);
            cv_squared(importance_, spec_.importance_coef, &dimportance_);
            for (Index t = 0; t < n; ++t)
                for (Index r = 0; r < k; ++r) dw(r, t) += T(dimportance_[std::size_t(choice(r, t))]);
        }
        // Gate weights -> probabilities of the chosen experts.
        auto& dp = dprobs_.resize(e, n);
        dp.setZero();
        if (spec_.routing == Routing::expert_choice) {
            for (Index x = 0; x < e; ++x)
                for (Index r = 0; r < choice.rows(); ++r) dp(x, choice(r, x)) += dw(r, x);
        } else {
            for (Index t = 0; t < n; ++t)
                detail::top_k_weights_backward<T>(
                    k, choice.data() + t * k, [&](Index i) { return p(i, t); }, [&](Index r) { return weight_.view()(r, t); },
                    [&](Index r) { return dw(r, t); }, spec_.renormalize, [&](Index i) -> T& { return dp(i, t); });
        }
        if (spec_.balance_coef > 0) switch_balance_loss<T>(p, routed_, k, spec_.balance_coef, &dp);
        auto& dh = dnoisy_.resize(e, n);
        detail::softmax_columns_backward<T>(p, dp, dh);
        auto& dl = dlogits_.resize(e, n);
        if (noise_on()) {
            auto& dstd = dstd_.resize(e, n);
            dstd.setZero();
            dl.setZero();
            if (spec_.load_coef > 0 && k < e) {  // load_ is the forward's
                dload_.assign(std::size_t(e), 0.0);
                cv_squared(load_, spec_.load_coef, &dload_);
                smooth_load<T>(logits_.view(), noisy_.view(), noise_std_.view(), choice, load_, &dload_, &dl, &dh, &dstd);
            }
            dl += dh;  // noisy = logits + eps .* std
            dstd += dh.cwiseProduct(eps_.view());
            auto& draw = dnoise_raw_.resize(e, n);
            const auto& raw = noise_raw_.view();
            for (Index i = 0; i < draw.size(); ++i) draw.data()[i] = dstd.data()[i] * sigmoid(raw.data()[i]);
        } else {
            dl = dh;
        }
        if (spec_.z_coef > 0) router_z_loss<T>(logits_.view(), spec_.z_coef, &dl);
        linear_backward(w_, spec_.router_bias ? &b_ : nullptr, dl, dx);
        if (noise_on()) linear_backward(noise_w_, nullptr, dnoise_raw_.view(), dx);
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        f(join_name(prefix, "router.weight"), w_);
        if (spec_.router_bias) f(join_name(prefix, "router.bias"), b_);
        if (spec_.noisy) f(join_name(prefix, "noise.weight"), noise_w_);
    }
    /// PyTorch's nn.Linear default for the router; the noise weight starts at 0 (noise std
    /// softplus(0) = 0.69), as in Shazeer's reference code.
    void reset_parameters(Rng& rng) {
        const double bound = 1.0 / std::sqrt(double(spec_.dim));
        for (Index i = 0; i < w_.size(); ++i) w_.value_vec()(i) = T(rng.uniform(-bound, bound));
        if (spec_.router_bias)
            for (Index i = 0; i < b_.size(); ++i) b_.value_vec()(i) = T(rng.uniform(-bound, bound));
        if (spec_.noisy) noise_w_.value_vec().setZero();
    }
    void set_training(bool on) { training_ = on; }
    bool training() const { return training_; }
    /// Keep the last noise draw (for gradient checks); off by default.
    void freeze_noise(bool on) { noise_frozen_ = on; }

private:
    bool noise_on() const { return spec_.noisy && training_; }
    static T softplus(T v) { return v > T(20) ? v : std::log1p(std::exp(v)); }
    static T sigmoid(T v) { return v >= T(0) ? T(1) / (T(1) + std::exp(-v)) : std::exp(v) / (T(1) + std::exp(v)); }

    void linear(const Param<T>& w, const Param<T>* b, const ConstView<T>& x, MatrixView<T>& out) const {
        if (b) out.colwise() = b->value_vec();
        else out.setZero();
        detail::gemm<T>(true, false, spec_.experts, x.cols(), spec_.dim, T(1), w.value_vec().data(), spec_.dim, x.data(),
                        x.outerStride(), true, out.data(), out.outerStride());
    }
    void linear_backward(Param<T>& w, Param<T>* b, const ConstView<T>& dl, MatrixView<T>& dx) {
        const Index e = spec_.experts, d = spec_.dim, n = x_.cols();
        if (b) detail::add_row_sums(dl, b->grad_vec());
        detail::gemm<T>(false, true, d, e, n, T(1), x_.data(), x_.outerStride(), dl.data(), e, true, w.grad_vec().data(), d);
        detail::gemm<T>(false, false, d, n, e, T(1), w.value_vec().data(), d, dl.data(), e, true, dx.data(), dx.outerStride());
    }

    /// Expert choice: each expert's c tokens of highest probability (ties, and NaN, which ranks
    /// last: lower token first), listed in token order, and their probabilities as gate weights.
    /// Experts over the threads in one contiguous range per thread, each range with one token
    /// order of scratch (threads x N indices, not E x N).
    void choose_tokens(Index c) {
        const Index e = spec_.experts, n = x_.cols();
        detail::require(c >= 1 && c <= n, name_, ": expert capacity ", c, " is outside 1 ..", n, " tokens");
        const auto& p = probs_.view();
        auto& choice = choice_.resize(c, e);
        auto& weight = weight_.resize(c, e);
        const double flops = 8.0 * double(n) * double(e);
        const Index threads = detail::threads_for(flops, e), per = (e + threads - 1) / threads;
        if (order_.size() < std::size_t(threads)) order_.resize(std::size_t(threads));
        parallel_for(e, per, flops, [&](Index begin, Index end) {
            auto& o = order_[std::size_t(begin / per)];
            o.resize(std::size_t(n));  // grow-only capacity: no allocation once the batch size is known
            for (Index x = begin; x < end; ++x) {
                const auto score = [&](Index t) {
                    const T v = p(x, t);
                    return std::isnan(v) ? -std::numeric_limits<T>::infinity() : v;
                };
                for (Index t = 0; t < n; ++t) o[std::size_t(t)] = t;
                const auto better = [&](Index a, Index b) { return score(a) > score(b) || (score(a) == score(b) && a < b); };
                std::nth_element(o.begin(), o.begin() + (c - 1), o.end(), better);
                std::sort(o.begin(), o.begin() + c);
                for (Index r = 0; r < c; ++r) {
                    choice(r, x) = o[std::size_t(r)];
                    weight(r, x) = p(x, o[std::size_t(r)]);
                }
            }
        });
    }

    /// Statistics and aux losses (values; gradients are added in backward).
    void compute_aux(RoutingStats& st) {
        const Index e = spec_.experts, n = x_.cols(), k = spec_.k;
        const auto choice = this->choice();
        routed_.assign(std::size_t(e), 0);
        if (spec_.routing == Routing::expert_choice) {
            st.tokens = n;
            std::fill(routed_.begin(), routed_.end(), choice.rows());
            st.routed = routed_;
            st.dead_experts = 0;
            st.load_balance = 1.0;
            st.entropy = mean_entropy();
            st.balance_loss = st.importance_loss = st.load_loss = 0;
            st.z_loss = router_z_loss<T>(logits_.view(), 0.0, nullptr);
            aux_loss_ = spec_.z_coef * st.z_loss;
            return;
        }
        for (Index i = 0; i < choice.size(); ++i) ++routed_[std::size_t(choice.data()[i])];
        st.tokens = n;
        st.routed = routed_;
        st.dead_experts = Index(std::count(routed_.begin(), routed_.end(), Index(0)));
        st.load_balance = double(*std::max_element(routed_.begin(), routed_.end())) / (double(n * k) / double(e));
        const auto& p = probs_.view();
        st.entropy = mean_entropy();
        st.balance_loss = switch_balance_loss<T>(p, routed_, k, 0.0, nullptr);
        importance_.assign(std::size_t(e), 0.0);  // Shazeer's importance: the sum of each expert's gate weights
        for (Index t = 0; t < n; ++t)
            for (Index r = 0; r < k; ++r) importance_[std::size_t(choice(r, t))] += double(weight_.view()(r, t));
        st.importance_loss = cv_squared(importance_, 0.0, nullptr);
        st.load_loss = 0;
        if (noise_on() && k < e) {
            smooth_load<T>(logits_.view(), noisy_.view(), noise_std_.view(), choice, load_, nullptr, nullptr, nullptr, nullptr);
            st.load_loss = cv_squared(load_, 0.0, nullptr);
        }
        st.z_loss = router_z_loss<T>(logits_.view(), 0.0, nullptr);
        aux_loss_ = spec_.balance_coef * st.balance_loss + spec_.importance_coef * st.importance_loss +
                    spec_.load_coef * st.load_loss + spec_.z_coef * st.z_loss;
    }

    /// Mean over tokens of the entropy of the router's probabilities, in nats.
    double mean_entropy() const {
        const auto& p = probs_.view();
        double ent = 0;
        for (Index i = 0; i < p.size(); ++i) {
            const double v = double(p.data()[i]);
            if (v > 0) ent -= v * std::log(v);
        }
        return ent / double(std::max<Index>(1, p.cols()));
    }

    RouterSpec spec_;
    std::string name_;
    Param<T> w_, b_, noise_w_;
    Rng noise_rng_;
    bool training_ = true, noise_frozen_ = false;
    ConstView<T> x_;
    Buffer<T> logits_, noise_raw_, eps_, noise_std_, noisy_, probs_, weight_;
    Buffer<Index> choice_;
    Buffer<T> dprobs_, dnoisy_, dlogits_, dstd_, dnoise_raw_;
    std::vector<Index> routed_;
    std::vector<std::vector<Index>> order_;  // expert choice: per thread's range of experts, the tokens by score
    std::vector<double> importance_, dimportance_, load_, dload_;
    double aux_loss_ = 0;
};

}  // namespace moe
