#pragma once
// Losses with per-sample weights or masks.
//
// Every loss takes predictions (logits) of shape K x B, targets, and optionally a 1 x B row of
// per-sample weights. A sample is counted when its weight is non-zero, and
//     loss = sum_j w_j * sum_i l(z_ij, y_ij) / (K * count)        (LossNormalization::counted)
// so a 0/1 mask gives the mean over the counted samples, and all-non-zero weights give PyTorch's
// `weight=` semantics (mean of w * l). A batch with no counted sample has loss 0 and zero gradient,
// which is what a post-click task needs when a batch has no click. LossNormalization::batch divides
// by K * B instead, whatever the weights: the common PyTorch recipe `(loss * mask).sum() / B`.
//
// backward() returns d loss / d logits (K x B) and may be scaled by an upstream factor.
#include <cmath>
#include <string>

#include "moe/core/buffer.hpp"
#include "moe/core/errors.hpp"
#include "moe/core/view.hpp"
#include "moe/layers/activations.hpp"
#include "moe/models/task.hpp"

namespace moe {

/// What a weighted loss is divided by: the counted samples (non-zero weight; the default), or the
/// whole batch (PyTorch's `(l * mask).sum() / batch_size` and `reduction='mean'` on masked terms).
enum class LossNormalization { counted, batch };

inline const char* to_string(LossNormalization n) { return n == LossNormalization::counted ? "counted" : "batch"; }

namespace detail {

template <class T>
void check_loss_inputs(const ConstView<T>& z, const ConstView<T>& y, const ConstView<T>& w, Index target_rows,
                       const std::string& name) {
    detail::check_shape(y, target_rows, z.cols(), name, "forward", "targets");
    if (w.size() != 0) {
        detail::check_shape(w, 1, z.cols(), name, "forward", "weights");
        for (Index j = 0; j < w.cols(); ++j)
            if (!std::isfinite(static_cast<double>(w(0, j))) || w(0, j) < T(0))
                throw config_error(concat(name, "::forward: weight of sample ", j, " is ", w(0, j),
                                          ", expected a finite value >= 0"));
    }
}

template <class T>
Index counted_samples(const ConstView<T>& w, Index batch) {
    if (w.size() == 0) return batch;
    Index c = 0;
    for (Index j = 0; j < w.cols(); ++j) c += w(0, j) != T(0);
    return c;
}

/// Shared machinery of the elementwise losses: Op supplies check(y), value(z, y) and grad(z, y).
template <class T, class Op>
class ElementwiseLoss {
public:
    using Scalar = T;
    explicit ElementwiseLoss(Op op, std::string name) : op_(op), name_(std::move(name)) {}

    /// Mean loss over the counted samples. Shapes: logits K x B, targets K x B, weights 1 x B or empty.
    T forward(const ConstView<T>& logits, const ConstView<T>& targets, const ConstView<T>& weights = {}) {
        check_loss_inputs(logits, targets, weights, logits.rows(), name_);
        // Labels of samples with weight 0 are not looked at: a missing post-click label may be NaN.
        for (Index j = 0; j < targets.cols(); ++j)
            if (weights.size() == 0 || weights(0, j) != T(0))
                for (Index i = 0; i < targets.rows(); ++i) op_.check(targets(i, j), i, j, name_);
        z_ = logits;
        y_ = targets;
        w_ = weights;
        const Index count = normalization_ == LossNormalization::batch ? logits.cols() : counted_samples(weights, logits.cols());
        denom_ = count == 0 ? T(0) : T(1) / T(logits.rows() * count);
        T total = 0;
        for (Index j = 0; j < logits.cols(); ++j) {
            const T wj = weights.size() ? weights(0, j) : T(1);
            if (wj == T(0)) continue;
            T s = 0;
            for (Index i = 0; i < logits.rows(); ++i) s += op_.value(logits(i, j), targets(i, j));
            total += wj * s;
        }
        return total * denom_;
    }

    /// d loss / d logits, times `scale` (the upstream gradient; 1 for a loss at the top).
    const MatrixView<T>& backward(T scale = T(1)) {
        auto& g = grad_.resize(z_.rows(), z_.cols());
        for (Index j = 0; j < z_.cols(); ++j) {
            const T wj = (w_.size() ? w_(0, j) : T(1)) * denom_ * scale;
            for (Index i = 0; i < z_.rows(); ++i) g(i, j) = wj == T(0) ? T(0) : wj * op_.grad(z_(i, j), y_(i, j));
        }
        return g;
    }
    const std::string& name() const { return name_; }
    const Op& op() const { return op_; }
    void set_normalization(LossNormalization n) { normalization_ = n; }
    LossNormalization normalization() const { return normalization_; }

private:
    Op op_;
    std::string name_;
    LossNormalization normalization_ = LossNormalization::counted;
    ConstView<T> z_, y_, w_;
    T denom_ = 0;
    Buffer<T> grad_;
};

template <class T>
void check_finite_target(T y, Index i, Index j, const std::string& name) {
    if (!valid_regression_label(y))
        throw config_error(concat(name, "::forward: target (", i, ", ", j, ") is ", y, ", expected a finite value"));
}

template <class T>
struct BCEWithLogitsOp {
    void check(T y, Index i, Index j, const std::string& name) const {
        if (!valid_binary_label(y))
            throw config_error(concat(name, "::forward: label (", i, ", ", j, ") is ", y, ", expected a value in [0, 1]"));
    }
    // max(z, 0) - z y + log(1 + exp(-|z|)): exact for any finite z, no overflow at +-1e4.
    T value(T z, T y) const { return std::max(z, T(0)) - z * y + std::log1p(std::exp(-std::abs(z))); }
    T grad(T z, T y) const { return stable_sigmoid(z) - y; }
};

template <class T>
struct MSEOp {
    void check(T y, Index i, Index j, const std::string& name) const { check_finite_target(y, i, j, name); }
    T value(T z, T y) const { return (z - y) * (z - y); }
    T grad(T z, T y) const { return T(2) * (z - y); }
};

template <class T>
struct HuberOp {
    T delta;
    void check(T y, Index i, Index j, const std::string& name) const { check_finite_target(y, i, j, name); }
    T value(T z, T y) const {
        const T r = std::abs(z - y);
        return r < delta ? T(0.5) * r * r : delta * (r - T(0.5) * delta);
    }
    T grad(T z, T y) const {
        const T r = z - y;
        return std::abs(r) < delta ? r : (r > T(0) ? delta : -delta);
    }
};

}  // namespace detail

/// Binary cross-entropy on logits (torch.nn.BCEWithLogitsLoss). Labels in [0, 1]. Shapes: K x B.
template <class T>
class BCEWithLogitsLoss : public detail::ElementwiseLoss<T, detail::BCEWithLogitsOp<T>> {
public:
    BCEWithLogitsLoss() : detail::ElementwiseLoss<T, detail::BCEWithLogitsOp<T>>({}, "moe::BCEWithLogitsLoss") {}
};

/// Mean squared error (torch.nn.MSELoss). Shapes: K x B.
template <class T>
class MSELoss : public detail::ElementwiseLoss<T, detail::MSEOp<T>> {
public:
    MSELoss() : detail::ElementwiseLoss<T, detail::MSEOp<T>>({}, "moe::MSELoss") {}
};

/// Huber loss (torch.nn.HuberLoss): 0.5 r^2 for |r| < delta, else delta (|r| - delta / 2). Shapes: K x B.
template <class T>
class HuberLoss : public detail::ElementwiseLoss<T, detail::HuberOp<T>> {
public:
    explicit HuberLoss(double delta = 1.0)
        : detail::ElementwiseLoss<T, detail::HuberOp<T>>({checked_delta(delta)}, "moe::HuberLoss") {}

private:
    static T checked_delta(double d) {
        detail::require(d > 0 && std::isfinite(d), "moe::HuberLoss: delta must be positive, got ", d);
        return T(d);
    }
};

/// Softmax cross-entropy (torch.nn.CrossEntropyLoss). Logits C x B; targets 1 x B holding class
/// indices 0..C-1 (stored as T); weights 1 x B or empty. Mean over the counted samples.
template <class T>
class CrossEntropyLoss {
public:
    using Scalar = T;
    explicit CrossEntropyLoss(std::string name = "moe::CrossEntropyLoss") : name_(std::move(name)) {}

    T forward(const ConstView<T>& logits, const ConstView<T>& targets, const ConstView<T>& weights = {}) {
        if (logits.rows() < 1) throw shape_error(name_ + "::forward: logits have 0 rows (classes)");
        detail::check_loss_inputs(logits, targets, weights, 1, name_);
        const Index c = logits.rows();
        for (Index j = 0; j < targets.cols(); ++j) {
            const T y = targets(0, j);
            if (weights.size() != 0 && weights(0, j) == T(0)) continue;  // not counted, not looked at
            if (!detail::valid_class_label(y, c))
                throw config_error(detail::concat(name_, "::forward: class label of sample ", j, " is ", y,
                                                  ", expected an integer in [0, ", c - 1, "]"));
        }
        y_ = targets;
        w_ = weights;
        const Index count =
            normalization_ == LossNormalization::batch ? logits.cols() : detail::counted_samples(weights, logits.cols());
        denom_ = count == 0 ? T(0) : T(1) / T(count);
        auto& p = prob_.resize(c, logits.cols());
        T total = 0;
        for (Index j = 0; j < logits.cols(); ++j) {
            const T m = logits.col(j).maxCoeff();
            p.col(j) = (logits.col(j).array() - m).exp().matrix();
            const T s = p.col(j).sum();
            p.col(j) /= s;
            const T wj = weights.size() ? weights(0, j) : T(1);
            if (wj == T(0)) continue;
            const auto k = static_cast<Index>(targets(0, j));
            total += wj * (m + std::log(s) - logits(k, j));  // logsumexp - z_k
        }
        return total * denom_;
    }
    /// d loss / d logits = w (softmax - onehot) / count, times scale. Shape C x B.
    const MatrixView<T>& backward(T scale = T(1)) {
        auto& g = grad_.resize(prob_.rows(), prob_.cols());
        for (Index j = 0; j < g.cols(); ++j) {
            const T wj = (w_.size() ? w_(0, j) : T(1)) * denom_ * scale;
            g.col(j) = wj * prob_.view().col(j);
            if (wj != T(0)) g(static_cast<Index>(y_(0, j)), j) -= wj;
        }
        return g;
    }
    /// Class probabilities of the last forward (C x B).
    const MatrixView<T>& probabilities() const { return prob_.view(); }
    const std::string& name() const { return name_; }
    void set_normalization(LossNormalization n) { normalization_ = n; }
    LossNormalization normalization() const { return normalization_; }

private:
    std::string name_;
    LossNormalization normalization_ = LossNormalization::counted;
    ConstView<T> y_, w_;
    T denom_ = 0;
    Buffer<T> prob_, grad_;
};

}  // namespace moe
