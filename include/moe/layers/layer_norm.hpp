#pragma once
// Per-sample normalisation over the features, as Transformer blocks use it: LayerNorm
// (torch.nn.LayerNorm) and RMSNorm (LLaMA's, torch.nn.RMSNorm). Unlike BatchNorm, each column (a
// token or a sample) is normalised on its own: no batch statistics, the same in training and
// evaluation, any batch size including 1.
#include <cmath>
#include <string>

#include "moe/core/buffer.hpp"
#include "moe/core/parameters.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/view.hpp"
#include "moe/detail/row_sums.hpp"

namespace moe {

namespace detail {
/// What LayerNorm and RMSNorm share: the affine weight (and LayerNorm's bias), the cached
/// normalised input and 1 / sigma per column, forward, infer, backward and the parameter plumbing.
/// Norm (CRTP) supplies normalise(x, xhat, inv*) and input_grad(g, xhat, inv, dx).
template <class T, class Norm>
class ColumnNorm {
public:
    using Scalar = T;

    Index features() const { return weight_.rows; }
    const std::string& name() const { return name_; }
    double eps() const { return eps_; }
    Param<T>& weight() { return weight_; }
    const MatrixView<T>& output() const { return y_.view(); }
    void set_training(bool on) { training_ = on; }
    bool training() const { return training_; }

    const MatrixView<T>& forward(const ConstView<T>& x) {
        check_rows(x, features(), name_, "forward");
        auto& xhat = xhat_.resize(x.rows(), x.cols());
        self().normalise(x, xhat, &inv_);
        auto& y = y_.resize(x.rows(), x.cols());
        affine(xhat, y);
        return y;
    }

    /// Evaluation into a caller-owned buffer (the same arithmetic as forward); caches nothing.
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& out) const {
        check_rows(x, features(), name_, "forward");
        auto& y = out.resize(x.rows(), x.cols());
        self().normalise(x, y, nullptr);
        affine(y, y);
        return y;
    }

    /// dx from dy (features x B); adds the gradients of weight (and bias).
    const MatrixView<T>& backward(const ConstView<T>& dy) {
        check_shape(dy, features(), xhat_.view().cols(), name_, "backward", "output gradient");
        const ConstView<T> xh = xhat_.view();
        add_row_dots(dy, xh, weight_.grad_vec());
        if (has_bias_) add_row_sums(dy, bias_.grad_vec());
        auto& g = g_.resize(dy.rows(), dy.cols());
        g = (dy.array().colwise() * weight_.value_vec().array()).matrix();
        auto& dx = dx_.resize(dy.rows(), dy.cols());
        self().input_grad(g, xhat_.view(), inv_, dx);
        return dx;
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        f(join_name(prefix, "weight"), weight_);
        if (has_bias_) f(join_name(prefix, "bias"), bias_);
    }
    /// weight 1, bias 0 (PyTorch's init).
    void reset_parameters(Rng&) {
        weight_.value.setOnes();
        if (has_bias_) bias_.value.setZero();
    }

protected:
    ColumnNorm(Index features, double eps, bool bias, std::string name)
        : name_(std::move(name)), eps_(eps), has_bias_(bias), weight_(features, 1), bias_(bias ? features : 0, 1) {
        weight_.vector = bias_.vector = true;  // nn.LayerNorm's weight and bias are 1-D
        require(features > 0, name_, ": features must be positive, got ", features);
        require(eps > 0 && std::isfinite(eps), name_, ": eps must be positive and finite, got ", eps);
    }

    std::string name_;
    double eps_;

private:
    const Norm& self() const { return static_cast<const Norm&>(*this); }
    /// y = xhat * weight (+ bias), per feature.
    void affine(const MatrixView<T>& xhat, MatrixView<T>& y) const {
        if (has_bias_)
            y = ((xhat.array().colwise() * weight_.value_vec().array()).colwise() + bias_.value_vec().array()).matrix();
        else
            y = (xhat.array().colwise() * weight_.value_vec().array()).matrix();
    }

    bool has_bias_;
    bool training_ = true;
    Param<T> weight_, bias_;
    Buffer<T> y_, xhat_, g_, dx_;
    Vector<T> inv_;  // 1 / sigma of each column of the last forward
};
}  // namespace detail

/// Layer normalisation over the features of each column, as torch.nn.LayerNorm(features, eps):
/// y = (x - mean) / sqrt(var + eps) * weight + bias, mean and (biased) variance over the column's
/// features. Shapes: x, y are features x B (B tokens or samples); weight and bias are features
/// ("weight", "bias", PyTorch's names; ones and zeros at init). `bias = false` leaves the bias out
/// (nn.LayerNorm(bias=False)).
template <class T>
class LayerNorm : public detail::ColumnNorm<T, LayerNorm<T>> {
    using Base = detail::ColumnNorm<T, LayerNorm<T>>;
    friend Base;

public:
    explicit LayerNorm(Index features, double eps = 1e-5, bool bias = true, std::string name = "moe::LayerNorm")
        : Base(features, eps, bias, std::move(name)) {}

private:
    /// xhat = (x - mean) * inv per column, inv = 1 / sqrt(var + eps), kept in *inv when given.
    void normalise(const ConstView<T>& x, MatrixView<T>& xhat, Vector<T>* inv) const {
        if (inv) inv->resize(x.cols());
        const T d = T(x.rows());
        for (Index j = 0; j < x.cols(); ++j) {
            const T mean = x.col(j).sum() / d;
            xhat.col(j) = x.col(j).array() - mean;
            const T r = T(1) / std::sqrt(xhat.col(j).squaredNorm() / d + T(this->eps_));
            xhat.col(j) *= r;
            if (inv) (*inv)(j) = r;
        }
    }
    /// Per column, with g = dy * weight: dx = inv / d (d g - sum(g) - xhat sum(g xhat)).
    static void input_grad(const MatrixView<T>& g, const MatrixView<T>& xhat, const Vector<T>& inv, MatrixView<T>& dx) {
        const T d = T(g.rows());
        for (Index j = 0; j < g.cols(); ++j) {
            const T sum_g = g.col(j).sum(), sum_gx = g.col(j).dot(xhat.col(j));
            dx.col(j) = (inv(j) / d) * (d * g.col(j).array() - sum_g - xhat.col(j).array() * sum_gx).matrix();
        }
    }
};

/// Root-mean-square normalisation over the features of each column (Zhang and Sennrich 2019;
/// LLaMA, Mixtral; torch.nn.RMSNorm(features, eps)): y = x / sqrt(mean(x^2) + eps) * weight.
/// Shapes as LayerNorm; one parameter, "weight" (ones at init). eps defaults to 1e-6 (LLaMA's).
template <class T>
class RMSNorm : public detail::ColumnNorm<T, RMSNorm<T>> {
    using Base = detail::ColumnNorm<T, RMSNorm<T>>;
    friend Base;

public:
    explicit RMSNorm(Index features, double eps = 1e-6, std::string name = "moe::RMSNorm")
        : Base(features, eps, false, std::move(name)) {}

private:
    void normalise(const ConstView<T>& x, MatrixView<T>& xhat, Vector<T>* inv) const {
        if (inv) inv->resize(x.cols());
        const T d = T(x.rows());
        for (Index j = 0; j < x.cols(); ++j) {
            const T r = T(1) / std::sqrt(x.col(j).squaredNorm() / d + T(this->eps_));
            xhat.col(j) = x.col(j) * r;
            if (inv) (*inv)(j) = r;
        }
    }
    /// Per column, with g = dy * weight: dx = inv (g - xhat mean(g xhat)).
    static void input_grad(const MatrixView<T>& g, const MatrixView<T>& xhat, const Vector<T>& inv, MatrixView<T>& dx) {
        const T d = T(g.rows());
        for (Index j = 0; j < g.cols(); ++j) dx.col(j) = inv(j) * (g.col(j) - xhat.col(j) * (g.col(j).dot(xhat.col(j)) / d));
    }
};

}  // namespace moe
