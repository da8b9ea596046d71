#pragma once
// SparseMoE: a token-level mixture of experts with top-k routing (Shazeer 2017, Switch, Mixtral),
// assembled from the routing pieces:
//
//   x (d x N) ─► TopKRouter (routing/router.hpp): logits, [noise], softmax, top k per token, weights w
//             ─► DispatchPlan (routing/dispatch.hpp): the kept (token, expert) pairs sorted into
//                contiguous per-expert blocks of slots; xp = x gathered (d x S)
//             ─► the experts: one grouped MLP d -> ffn -> d (or SwiGLU), expert e on its block of
//                slots (GroupedLinear's column segments: one GEMM per expert and layer)
//             ─► combine (routing/combine.hpp): y_t = sum over t's kept slots of w * out
//
// Expert-choice routing (Zhou et al. 2022; RouterSpec::routing) turns the selection around: each
// expert takes the c tokens it scores highest, c = ceil(capacity_factor N / E), so every expert runs
// exactly c slots and a token gets any number of experts (possibly none). The same plan, gather,
// experts and combine run it; only the plan is built from the experts' token lists.
//
// Backward runs the same pieces backwards. With k = E and no capacity every expert sees every token:
// the experts then read x itself (no gather), which is the dense softmax-weighted layer the
// benchmarks compare against.
#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/layers/mlp.hpp"
#include "moe/layers/swiglu.hpp"
#include "moe/routing/combine.hpp"
#include "moe/routing/dispatch.hpp"
#include "moe/routing/router.hpp"

namespace moe {

/// What happens to a token none of whose assignments fit under the capacity.
enum class DroppedTokens {
    zero,        ///< its output is zero (add a residual outside the layer, as Switch does)
    passthrough  ///< its output is its input
};

/// What an expert is.
enum class ExpertKind {
    mlp,    ///< nn.Sequential(Linear(d, ffn), activation, Linear(ffn, d)) with biases
    swiglu  ///< Mixtral's w2(silu(w1 x) * w3 x), no biases (`activation` is not used)
};

/// Configuration of a SparseMoE layer, checked when it is built: the router's (RouterSpec: dim,
/// experts, k, routing, renormalize, noisy, router_bias, the aux losses' coefficients, noise_seed) and:
struct SparseMoESpec : RouterSpec {
    Index ffn = 0;  ///< hidden width of each expert (Linear d -> ffn, activation, Linear ffn -> d)
    ActivationKind activation = ActivationKind::gelu;
    ExpertKind expert = ExpertKind::mlp;
    /// Top-k: capacity per expert = ceil(capacity_factor * N k / E) assignments; 0 = dropless. When
    /// an expert is over capacity, the first choices of all tokens win over second choices, and
    /// earlier tokens over later ones. Expert choice: each expert takes c = ceil(capacity_factor * N
    /// / E) tokens (at most N); must be > 0 (capacity_factor is the mean number of experts per token).
    double capacity_factor = 0.0;
    DroppedTokens dropped = DroppedTokens::zero;
};

/// A token-level top-k mixture of E experts. Shapes: x is d x N (one token per column), y is d x N.
/// forward() also computes the auxiliary losses (aux_loss()) and the routing statistics (stats());
/// backward(dy) gives the gradients of sum(dy .* y) + aux_loss(): the aux losses' gradients are
/// included, so add aux_loss() to the loss you report. Parameters: "router.weight" (E x d),
/// "router.bias" (E, with router_bias), "noise.weight" (E x d, noisy), and per expert e
/// "experts.{e}.0.weight" (ffn x d), "experts.{e}.0.bias", "experts.{e}.2.weight" (d x ffn),
/// "experts.{e}.2.bias", as a PyTorch ModuleList of nn.Sequential(Linear, act, Linear); SwiGLU
/// experts: "experts.{e}.w1.weight" (ffn x d), "experts.{e}.w2.weight" (d x ffn), "experts.{e}.w3.weight".
template <class T>
class SparseMoE : public Composite<SparseMoE<T>> {
public:
    using Scalar = T;
    using Spec = SparseMoESpec;

    explicit SparseMoE(const SparseMoESpec& spec, std::string name = "moe::SparseMoE")
        : spec_(checked(spec, name)), name_(std::move(name)), router_(spec, name_ + ".router") {
        if (spec.expert == ExpertKind::mlp)
            experts_.mlp.emplace(expert_spec(spec), name_ + ".experts", spec.experts, GroupedInput::column_segments,
                                 /*always_indexed=*/true);
        else
            experts_.glu.emplace(spec.dim, spec.ffn, spec.experts, name_ + ".experts", /*always_indexed=*/true);
    }

    const SparseMoESpec& spec() const { return spec_; }
    const std::string& name() const { return name_; }
    Index in_features() const { return spec_.dim; }
    Index experts() const { return spec_.experts; }
    /// True when every expert sees every token (top-k with k = E, no capacity): the dense layer.
    bool dense() const {
        return spec_.routing == Routing::top_k && spec_.k == spec_.experts && spec_.capacity_factor == 0.0;
    }

    /// Routing statistics and unweighted aux losses of the last forward.
    const RoutingStats& stats() const { return stats_; }
    /// The weighted sum of the aux losses of the last forward.
    double aux_loss() const { return router_.aux_loss(); }
    /// Top-k: the expert chosen by token t at rank r (0 = best) in the last forward, and its gate
    /// weight. Expert choice: the r-th token (in token order) expert t took, and its gate weight.
    Index choice(Index r, Index t) const { return router_.choice()(r, t); }
    T gate_weight(Index r, Index t) const { return router_.weights()(r, t); }
    /// The dispatch of the last forward: each expert's slots and each token's (routing/dispatch.hpp).
    const DispatchPlan& plan() const { return plan_; }
    /// Keep the last noise draw (for gradient checks); off by default.
    void freeze_noise(bool on) { router_.freeze_noise(on); }

    template <class F>
    void for_each_child(F&& f) {
        f("", router_);
        experts_.visit([&](auto& bank) { f("experts", bank); });
    }
    /// PyTorch's nn.Linear defaults, expert after expert (each expert's first then second layer),
    /// after the router's.
    void reset_parameters(Rng& rng) {
        router_.reset_parameters(rng);
        for (Index e = 0; e < spec_.experts; ++e) {
            if (experts_.glu) experts_.glu->reset_group(e, rng);
            else
                for (std::size_t l = 0; l < experts_.mlp->num_linear(); ++l) experts_.mlp->linear(l).reset_group(e, rng);
        }
    }
    bool training() const { return router_.training(); }
    const MatrixView<T>& output() const { return y_.view(); }

    const MatrixView<T>& forward(const ConstView<T>& x) {
        detail::check_rows(x, spec_.dim, name_, "forward");
        detail::require(x.cols() > 0, name_, "::forward: no tokens");
        x_ = x;
        const Index n = x.cols(), k = spec_.k, d = spec_.dim;
        const Index most_slots = expert_choice() ? spec_.experts * expert_capacity(n) : n * k;
        if (expert_choice()) {
            router_.forward(x, stats_, expert_capacity(n));
            plan_.build_expert_choice(router_.choice().data(), expert_capacity(n), n, spec_.experts);
        } else {
            router_.forward(x, stats_);
            // More than N k is dropless anyway; the bound also keeps a huge factor's double in
            // Index's range.
            const Index capacity =
                spec_.capacity_factor > 0.0
                    ? Index(std::min(double(n * k), std::ceil(spec_.capacity_factor * double(n) * double(k) / double(spec_.experts))))
                    : 0;
            plan_.build(router_.choice().data(), k, n, spec_.experts, capacity);
        }
        stats_.kept = plan_.kept;
        stats_.dropped = expert_choice() ? 0 : n * k - plan_.slots;
        stats_.dropped_tokens = plan_.dropped_tokens();
        // Expert inputs: x itself in the dense case, else the gathered slots.
        const MatrixView<T>* out = nullptr;
        experts_.visit([&](auto& bank) {
            if (dense()) {
                out = &bank.forward_segments(x, plan_.offset.data(), /*shared_columns=*/true);
            } else {
                // Every buffer sized for the most slots a batch of N tokens can have: a step whose
                // routing keeps more assignments than any before allocates nothing.
                xp_.reserve(d * most_slots);
                bank.reserve_columns(most_slots);
                auto& xp = xp_.resize(d, plan_.slots);
                detail::gather(x, plan_, xp);
                out = &bank.forward_segments(ConstView<T>(xp), plan_.offset.data(), false);
            }
        });
        auto& y = y_.resize(d, n);
        const T* o = out->data();
        for_each_term([&](auto&& terms, auto&& weight, auto&& slot) {
            detail::combine<T>(y.data(), n, 1, d, terms, weight,
                               [&](Index t, Index, Index j) -> const T* {
                                   const Index s = slot(t, j);
                                   return s < 0 ? nullptr : o + s * d;
                               },
                               double(k * d));
        });
        if (spec_.dropped == DroppedTokens::passthrough)
            for (Index t = 0; t < n; ++t)
                if (plan_.token_offset[std::size_t(t)] == plan_.token_offset[std::size_t(t + 1)]) y.col(t) = x.col(t);
        return y;
    }

    /// Adds the parameter gradients of sum(dy .* y) + aux_loss() and returns dx (d x N).
    const MatrixView<T>& backward(const ConstView<T>& dy) {
        const Index n = x_.cols(), d = spec_.dim, k = spec_.k;
        detail::check_shape(dy, d, n, name_, "backward", "output gradient");
        // Gradients of the gate weights, and of every kept expert output (w dy; a token's slots are
        // distinct, so nothing is shared and dout needs no zeroing).
        const auto& w = router_.weights();
        auto& dw = dweight_.resize(w.rows(), w.cols());
        dout_.reserve(d * (expert_choice() ? plan_.slots : n * k));
        auto& dout = dout_.resize(d, plan_.slots);
        const MatrixView<T>* bank_out = nullptr;
        experts_.visit([&](auto& bank) { bank_out = &bank.output(); });
        const T* o = bank_out->data();
        T* dop = dout.data();
        detail::for_each_sample(plan_.slots, 0.0, [&](Index s) { dout.col(s).setZero(); });
        for_each_term([&](auto&& terms, auto&& weight, auto&& slot) {
            detail::combine_backward<T>(
                dy.data(), n, 1, d, terms, weight,
                [&](Index t, Index, Index j) -> const T* {
                    const Index s = slot(t, j);
                    return s < 0 ? nullptr : o + s * d;
                },
                [&](Index t, Index, Index j) { return dop + slot(t, j) * d; },
                [&](Index t, Index, Index j) -> T& {
                    // Top-k: rank j of token t; expert choice: the slot's place in the experts' lists.
                    return expert_choice() ? dw.data()[slot(t, j)] : dw(j, t);
                },
                double(2 * k * d));
        });
        const MatrixView<T>* dxp_ptr = nullptr;
        experts_.visit([&](auto& bank) { dxp_ptr = &bank.backward(ConstView<T>(dout), true); });
        const MatrixView<T>& dxp = *dxp_ptr;
        auto& dx = dx_.resize(d, n);
        if (dense()) dx = dxp;  // the experts read x itself: their input gradient is dx
        else detail::gather_backward(ConstView<T>(dxp), plan_, dx, /*accumulate=*/false);
        if (spec_.dropped == DroppedTokens::passthrough)
            for (Index t = 0; t < n; ++t)
                if (plan_.token_offset[std::size_t(t)] == plan_.token_offset[std::size_t(t + 1)]) dx.col(t) += dy.col(t);
        router_.backward(dw, dx);
        return dx;
    }

private:
    /// The MLP or SwiGLU experts, chosen by the spec.
    struct Bank {
        std::optional<MLP<T>> mlp;
        std::optional<SwiGLU<T>> glu;
        template <class F>
        void visit(F&& f) {
            if (mlp) f(*mlp);
            else f(*glu);
        }
    };

    bool expert_choice() const { return spec_.routing == Routing::expert_choice; }
    /// Expert choice: the tokens each expert takes from a batch of n.
    Index expert_capacity(Index n) const {
        const double c = std::min(double(n), std::ceil(spec_.capacity_factor * double(n) / double(spec_.experts)));
        return std::max<Index>(1, Index(c));  // clamped in double first: a huge factor stays in range
    }
    /// Calls f(terms, weight, slot) with the combine's terms of the last forward: top-k, token t's k
    /// ranks (weight from the router's k x N weights, slot from the plan, -1 when dropped); expert
    /// choice, token t's slots in the plan (weight from the router's c x E weights at the slot).
    template <class F>
    void for_each_term(F&& f) {
        const auto& w = router_.weights();
        if (expert_choice()) {
            const auto& p = plan_;
            const auto slot = [&p](Index t, Index j) { return p.token_slots[std::size_t(p.token_offset[std::size_t(t)] + j)]; };
            f([&p](Index t, Index) { return p.token_offset[std::size_t(t) + 1] - p.token_offset[std::size_t(t)]; },
              [&w, &slot](Index t, Index, Index j) { return w.data()[slot(t, j)]; }, slot);
        } else {
            const Index k = spec_.k;
            f([k](Index, Index) { return k; }, [&w](Index t, Index, Index r) { return w(r, t); },
              [this](Index t, Index r) { return plan_.slot(r, t); });
        }
    }
    static const SparseMoESpec& checked(const SparseMoESpec& s, const std::string& name) {
        detail::require(s.dim > 0 && s.ffn > 0, name, ": dim and ffn must be positive, got ", s.dim, " and ", s.ffn);
        detail::require(s.capacity_factor == 0.0 || (s.capacity_factor > 0.0 && std::isfinite(s.capacity_factor)), name,
                        ": capacity_factor must be positive (or 0 for dropless), got ", s.capacity_factor);
        detail::require(s.routing != Routing::expert_choice || s.capacity_factor > 0.0, name,
                        ": expert-choice routing needs capacity_factor > 0 (the mean number of experts per token), got ",
                        s.capacity_factor);
        return s;
    }
    static MLPSpec expert_spec(const SparseMoESpec& s) {
        return make_mlp_spec(s.dim, {s.ffn}, s.dim, s.activation, /*batchnorm=*/false, /*dropout=*/0.0,
                             /*output_activation=*/false);
    }

    SparseMoESpec spec_;
    std::string name_;
    TopKRouter<T> router_;
    Bank experts_;
    DispatchPlan plan_;
    RoutingStats stats_;
    ConstView<T> x_;
    Buffer<T> xp_, y_, dweight_, dout_, dx_;
};

}  // namespace moe
