#pragma once
// Softmax gates over experts, alone and as a bank evaluated together.
#include <optional>
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/layers/grouped_linear.hpp"
#include "moe/layers/mlp.hpp"
#include "moe/layers/softmax.hpp"

namespace moe {

/// G softmax gates over E experts, all reading the same input (one per task in an MMoE), or with
/// shared_input = false each its own: x is then (G in) x B and gate g reads rows [g in, (g+1) in).
/// Gate g is softmax(W_g x + b_g), or softmax(MLP_g(x)) when hidden sizes are given.
/// Shapes: x is in x B (shared input); the probabilities are (G E) x B, gate g in rows [g E, (g+1) E), each
/// column of each gate summing to 1. All gates' first layers are one GEMM.
/// Parameters: "{g}.weight"/"{g}.bias" without hidden layers (nn.Linear per gate), else
/// "{g}.0.weight", ... (nn.Sequential per gate); "{g}" is dropped when G = 1 unless always_indexed
/// (a ModuleList of one gate, as an MMoE of one task has).
template <class T>
class GateBank : public Composite<GateBank<T>> {
public:
    using Scalar = T;

    GateBank(Index gates, Index in_features, Index experts, const std::vector<Index>& hidden = {},
             ActivationKind activation = ActivationKind::relu, std::string name = "moe::GateBank",
             bool shared_input = true, bool always_indexed = false)
        : name_(std::move(name)), gates_(gates), experts_(experts) {
        detail::require(gates > 0, name_, ": needs at least one gate, got ", gates);
        detail::require(experts > 0, name_, ": needs at least one expert, got ", experts);
        if (hidden.empty())
            linear_.emplace(gates, in_features, experts, shared_input, name_, always_indexed);
        else
            mlp_.emplace(make_mlp_spec(in_features, hidden, experts, activation, false, 0.0, false), name_, gates, shared_input,
                         always_indexed);
    }

    Index gates() const { return gates_; }
    Index experts() const { return experts_; }
    /// Features one gate reads.
    Index in_features() const { return linear_ ? linear_->in_features() : mlp_->spec().sizes.front(); }
    const std::string& name() const { return name_; }

    /// Gate probabilities ((G E) x B). Keeps a view of x for backward.
    const MatrixView<T>& forward(const ConstView<T>& x) {
        const MatrixView<T>& logits = linear_ ? linear_->forward(x) : mlp_->forward(x);
        auto& p = probs_.resize(logits.rows(), logits.cols());
        softmax(logits, p);
        return p;
    }

    /// Probabilities into caller scratch (the result lives in a or b); caches nothing. With
    /// `logits`, also points it at the logits (in the other buffer), which top-k routing selects on.
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& a, Buffer<T>& b,
                               const MatrixView<T>** logits = nullptr) const {
        const MatrixView<T>& z = linear_ ? linear_->infer(x, a) : mlp_->infer(x, a, b);
        Buffer<T>& out = z.data() == a.view().data() ? b : a;
        auto& p = out.resize(z.rows(), z.cols());
        softmax(z, p);
        if (logits) *logits = &z;
        return p;
    }

    /// dp is (G E) x B; adds parameter gradients, returns dx (or an empty matrix).
    const MatrixView<T>& backward(const ConstView<T>& dp, bool input_grad = true) {
        detail::check_shape(dp, probs_.rows(), probs_.cols(), name_, "backward", "probability gradient");
        auto& dl = dlogits_.resize(dp.rows(), dp.cols());
        const Index cols = dp.cols() * gates_;
        Eigen::Map<const Matrix<T>, 0, Eigen::OuterStride<>> y(probs_.view().data(), experts_, cols,
                                                                Eigen::OuterStride<>(experts_));
        Eigen::Map<const Matrix<T>, 0, Eigen::OuterStride<>> dy(dp.data(), experts_, cols, Eigen::OuterStride<>(experts_));
        MatrixView<T> dx(dl.data(), experts_, cols);
        if (dp.outerStride() != dp.rows()) throw shape_error(name_ + "::backward: the gradient must be contiguous");
        detail::softmax_columns_backward<T>(y, dy, dx);
        return linear_ ? linear_->backward(dl, input_grad) : mlp_->backward(dl, input_grad);
    }

    template <class F>
    void for_each_child(F&& f) {
        if (linear_) f("", *linear_);
        else f("", *mlp_);
    }
    /// Probabilities of the last forward.
    const MatrixView<T>& output() const { return probs_.view(); }
    /// Logits ((G E) x B, before the softmax) of the last forward.
    const MatrixView<T>& logits() const { return linear_ ? linear_->output() : mlp_->output(); }

private:
    // Softmax over each gate's E rows: (G E) x B column-major is E x (G B) column-major.
    void softmax(const MatrixView<T>& logits, MatrixView<T>& p) const {
        const Index cols = logits.cols() * gates_;
        MatrixView<T> in(const_cast<T*>(logits.data()), experts_, cols), out(p.data(), experts_, cols);
        detail::softmax_columns<T>(in, out);
    }

    std::string name_;
    Index gates_, experts_;
    std::optional<GroupedLinear<T>> linear_;
    std::optional<MLP<T>> mlp_;
    Buffer<T> probs_, dlogits_;
};

/// One softmax gate over E experts (a GateBank of one gate). Shapes: x is in x B, probabilities E x B.
/// Parameters "weight"/"bias" (nn.Linear), or "0.weight", ... with hidden layers.
template <class T>
class Gate : public GateBank<T> {
public:
    Gate(Index in_features, Index experts, const std::vector<Index>& hidden = {},
         ActivationKind activation = ActivationKind::relu, std::string name = "moe::Gate")
        : GateBank<T>(1, in_features, experts, hidden, activation, std::move(name)) {}
};

}  // namespace moe
