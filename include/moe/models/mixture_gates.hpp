#pragma once
// The task gates of a mixture model, of either kind: softmax gates (GateBank) or DSelect-k gates
// (DSelectKGateBank). Both give (G E) x B gate weights, which the one combine (routing/combine.hpp)
// mixes the experts with; only DSelect-k has an auxiliary loss.
#include <optional>
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/models/dselect_k_gate.hpp"
#include "moe/models/gate.hpp"

namespace moe {

/// The kind of a mixture's task gates.
enum class GateKind {
    softmax,   ///< softmax(W x + b), or softmax(MLP(x)) with hidden layers: every expert, weighted
    dselect_k  ///< DSelect-k (Hazimeh et al. 2021): at most k experts per gate, differentiable
};

inline const char* to_string(GateKind k) { return k == GateKind::softmax ? "softmax" : "dselect_k"; }

/// How the gates are built (fields of MMoESpec).
struct GateOptions {
    GateKind kind = GateKind::softmax;
    std::vector<Index> hidden;  ///< softmax gates: hidden widths before the softmax (usually none)
    ActivationKind activation = ActivationKind::relu;
    Index k = 2;                ///< DSelect-k: experts per gate
    double gamma = 1.0;         ///< DSelect-k: width of the smooth step
    double entropy_coef = 0.0;  ///< DSelect-k: weight of the entropy regulariser
};

/// G gates over E experts, all reading x (in x B); gate weights (G E) x B. Parameters as the gate
/// kind names them (GateBank: "{g}.weight" ...; DSelect-k: "{g}.z.weight" ...).
template <class T>
class MixtureGates : public Composite<MixtureGates<T>> {
public:
    using Scalar = T;

    MixtureGates(Index gates, Index in, Index experts, const GateOptions& o, const std::string& name, bool always_indexed) {
        if (o.kind == GateKind::softmax)
            softmax_.emplace(gates, in, experts, o.hidden, o.activation, name, /*shared_input=*/true, always_indexed);
        else
            dselect_.emplace(gates, in, experts, o.k, o.gamma, o.entropy_coef, name, always_indexed);
    }

    Index gates() const { return softmax_ ? softmax_->gates() : dselect_->gates(); }
    Index experts() const { return softmax_ ? softmax_->experts() : dselect_->experts(); }

    template <class F>
    void for_each_child(F&& f) {
        if (softmax_) f("", *softmax_);
        else f("", *dselect_);
    }

    const MatrixView<T>& forward(const ConstView<T>& x) { return softmax_ ? softmax_->forward(x) : dselect_->forward(x); }
    /// Gate weights into caller scratch (three buffers; the result lives in one of them).
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& a, Buffer<T>& b, Buffer<T>& c) const {
        return softmax_ ? softmax_->infer(x, a, b) : dselect_->infer(x, a, b, c);
    }
    const MatrixView<T>& backward(const ConstView<T>& dp, bool input_grad) {
        return softmax_ ? softmax_->backward(dp, input_grad) : dselect_->backward(dp, input_grad);
    }
    const MatrixView<T>& output() const { return softmax_ ? softmax_->output() : dselect_->output(); }
    /// The gates' auxiliary loss of the last forward (DSelect-k's regulariser; 0 for softmax gates).
    double aux_loss() const { return dselect_ ? dselect_->aux_loss() : 0.0; }

private:
    std::optional<GateBank<T>> softmax_;
    std::optional<DSelectKGateBank<T>> dselect_;
};

}  // namespace moe
