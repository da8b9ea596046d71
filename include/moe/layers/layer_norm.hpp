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
/// normalised input and 1 / sigma per column, and the parameter plumbing.
template <class T>
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

protected:
    ColumnNorm(Index features, double eps, bool bias, std::string name)
        : name_(std::move(name)), eps_(eps), has_bias_(bias), weight_(features, 1), bias_(bias ? features : 0, 1) {
        require(features > 0, name_, ": features must be positive, got ", features);
        require(eps > 0 && std::isfinite(eps), name_, ": eps must be positive and finite, got ", eps);
    }

    template <class F>
    void parameters(const std::string& prefix, F&& f) {
        f(join_name(prefix, "weight"), weight_);
        if (has_bias_) f(join_name(prefix, "bias"), bias_);
    }
    void reset() {
        weight_.value.setOnes();
        if (has_bias_) bias_.value.setZero();
    }
    /// y = xhat * weight (+ bias), per feature.
    template <class Out>
    void affine(const MatrixView<T>& xhat, Out& y) const {
        if (has_bias_)
            y = ((xhat.array().colwise() * weight_.value_vec().array()).colwise() + bias_.value_vec().array()).matrix();
        else
            y = (xhat.array().colwise() * weight_.value_vec().array()).matrix();
    }
    /// The affine part's backward: adds dweight (and dbias); returns g = dy * weight in g_.
    const MatrixView<T>& affine_backward(const ConstView<T>& dy) {
        const ConstView<T> xh = xhat_.view();
        add_row_dots(dy, xh, weight_.grad_vec());
        if (has_bias_) add_row_sums(dy, bias_.grad_vec());
        auto& g = g_.resize(dy.rows(), dy.cols());
        g = (dy.array().colwise() * weight_.value_vec().array()).matrix();
        return g;
    }

    std::string name_;
    double eps_;
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
class LayerNorm : public detail::ColumnNorm<T> {
    using Base = detail::ColumnNorm<T>;

public:
    explicit LayerNorm(Index features, double eps = 1e-5, bool bias = true, std::string name = "moe::LayerNorm")
        : Base(features, eps, bias, std::move(name)) {}

    const MatrixView<T>& forward(const ConstView<T>& x) {
        detail::check_rows(x, this->features(), this->name_, "forward");
        auto& xhat = this->xhat_.resize(x.rows(), x.cols());
        normalise(x, xhat, &this->inv_);
        auto& y = this->y_.resize(x.rows(), x.cols());
        this->affine(xhat, y);
        return y;
    }

    /// Evaluation into a caller-owned buffer (the same arithmetic as forward); caches nothing.
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& out) const {
        detail::check_rows(x, this->features(), this->name_, "forward");
        auto& y = out.resize(x.rows(), x.cols());
        normalise(x, y, nullptr);
        this->affine(y, y);
        return y;
    }

    /// dx from dy (features x B); adds the gradients of weight and bias. Per column, with g = dy *
    /// weight: dx = inv / d (d g - sum(g) - xhat sum(g xhat)).
    const MatrixView<T>& backward(const ConstView<T>& dy) {
        detail::check_shape(dy, this->features(), this->xhat_.view().cols(), this->name_, "backward", "output gradient");
        const MatrixView<T>& g = this->affine_backward(dy);
        const auto& xhat = this->xhat_.view();
        auto& dx = this->dx_.resize(dy.rows(), dy.cols());
        const T d = T(dy.rows());
        for (Index j = 0; j < dy.cols(); ++j) {
            const T sum_g = g.col(j).sum(), sum_gx = g.col(j).dot(xhat.col(j));
            dx.col(j) = (this->inv_(j) / d) * (d * g.col(j).array() - sum_g - xhat.col(j).array() * sum_gx).matrix();
        }
        return dx;
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        this->parameters(prefix, f);
    }
    void reset_parameters(Rng&) { this->reset(); }

private:
    /// xhat = (x - mean) * inv per column, inv = 1 / sqrt(var + eps), kept in *inv when given.
    void normalise(const ConstView<T>& x, MatrixView<T>& xhat, Vector<T>* inv) const {
        if (inv) inv->resize(x.cols());
        const T d = T(x.rows());
        for (Index j = 0; j < x.cols(); ++j) {
            const T mean = x.col(j).sum() / d;
            xhat.col(j) = x.col(j).array() - mean;
            const T var = xhat.col(j).squaredNorm() / d;
            const T r = T(1) / std::sqrt(var + T(this->eps_));
            xhat.col(j) *= r;
            if (inv) (*inv)(j) = r;
        }
    }
};

/// Root-mean-square normalisation over the features of each column (Zhang and Sennrich 2019;
/// LLaMA, Mixtral; torch.nn.RMSNorm(features, eps)): y = x / sqrt(mean(x^2) + eps) * weight.
/// Shapes as LayerNorm; one parameter, "weight" (ones at init). eps defaults to 1e-6 (LLaMA's).
template <class T>
class RMSNorm : public detail::ColumnNorm<T> {
    using Base = detail::ColumnNorm<T>;

public:
    explicit RMSNorm(Index features, double eps = 1e-6, std::string name = "moe::RMSNorm")
        : Base(features, eps, false, std::move(name)) {}

    const MatrixView<T>& forward(const ConstView<T>& x) {
        detail::check_rows(x, this->features(), this->name_, "forward");
        auto& xhat = this->xhat_.resize(x.rows(), x.cols());
        normalise(x, xhat, &this->inv_);
        auto& y = this->y_.resize(x.rows(), x.cols());
        this->affine(xhat, y);
        return y;
    }

    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& out) const {
        detail::check_rows(x, this->features(), this->name_, "forward");
        auto& y = out.resize(x.rows(), x.cols());
        normalise(x, y, nullptr);
        this->affine(y, y);
        return y;
    }

    /// Per column, with g = dy * weight: dx = inv (g - xhat mean(g xhat)).
    const MatrixView<T>& backward(const ConstView<T>& dy) {
        detail::check_shape(dy, this->features(), this->xhat_.view().cols(), this->name_, "backward", "output gradient");
        const MatrixView<T>& g = this->affine_backward(dy);
        const auto& xhat = this->xhat_.view();
        auto& dx = this->dx_.resize(dy.rows(), dy.cols());
        const T d = T(dy.rows());
        for (Index j = 0; j < dy.cols(); ++j) {
            const T mean_gx = g.col(j).dot(xhat.col(j)) / d;
            dx.col(j) = this->inv_(j) * (g.col(j) - xhat.col(j) * mean_gx);
        }
        return dx;
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        this->parameters(prefix, f);
    }
    void reset_parameters(Rng&) { this->reset(); }

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
};

}  // namespace moe
