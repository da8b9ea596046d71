#pragma once
#include <cmath>
#include <string>

#include "moe/core/buffer.hpp"
#include "moe/core/parameters.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/view.hpp"
#include "moe/detail/gemm.hpp"

namespace moe {

/// Fully connected layer y = W x + b, as torch.nn.Linear.
/// Shapes: x is in x B, y is out x B; weight is out x in (PyTorch's layout), bias is out x 1.
/// Parameters: `weight`, `bias`. Init: U(-1/sqrt(in), 1/sqrt(in)) for both, PyTorch's default.
template <class T>
class Linear {
public:
    using Scalar = T;

    Linear(Index in_features, Index out_features, std::string name = "moe::Linear")
        : name_(std::move(name)), weight_(out_features, in_features), bias_(out_features, 1) {
        check_scalar<T>();
        detail::require(in_features > 0 && out_features > 0, name_,
                        ": in_features and out_features must be positive, got ", in_features, " and ", out_features);
    }

    Index in_features() const { return weight_.cols; }
    Index out_features() const { return weight_.rows; }
    const std::string& name() const { return name_; }

    /// y = W x + b. Keeps a view of x for backward: x must stay alive and unchanged until then.
    const MatrixView<T>& forward(const ConstView<T>& x) {
        x_ = x;
        return infer(x, y_);
    }

    /// Inference into a caller-owned buffer: caches nothing, safe on a const layer from many threads.
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& out) const {
        detail::check_rows(x, in_features(), name_, "forward");
        auto& y = out.resize(out_features(), x.cols());
        detail::matmul<T>(y, weight_.value_t(), true, x, false);
        y.colwise() += bias_.value_vec();
        return y;
    }

    /// Adds dW = dy x^T and db = sum of dy over the batch to the gradients; returns dx = W^T dy.
    /// With input_grad = false, dx is not computed (the first layer of a model needs none).
    const MatrixView<T>& backward(const ConstView<T>& dy, bool input_grad = true) {
        detail::check_shape(dy, out_features(), x_.cols(), name_, "backward", "output gradient");
        auto dw_t = weight_.grad_t();  // dW^T = x dy^T, in x out
        detail::matmul<T>(dw_t, x_, false, dy, true, /*accumulate=*/true);
        bias_.grad_vec() += dy.rowwise().sum();
        if (!input_grad) return dx_.resize(0, 0);
        auto& dx = dx_.resize(in_features(), dy.cols());
        detail::matmul<T>(dx, weight_.value_t(), false, dy, false);
        return dx;
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        f(join_name(prefix, "weight"), weight_);
        f(join_name(prefix, "bias"), bias_);
    }

    /// PyTorch's default init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    void reset_parameters(Rng& rng) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(in_features()));
        for (Index i = 0; i < weight_.value.size(); ++i)
            weight_.value.data()[i] = static_cast<T>(rng.uniform(-bound, bound));
        for (Index i = 0; i < bias_.value.size(); ++i)
            bias_.value.data()[i] = static_cast<T>(rng.uniform(-bound, bound));
    }

    void set_training(bool) {}

    Param<T>& weight() { return weight_; }
    Param<T>& bias() { return bias_; }
    const Param<T>& weight() const { return weight_; }
    const Param<T>& bias() const { return bias_; }
    const MatrixView<T>& output() const { return y_.view(); }

private:
    std::string name_;
    Param<T> weight_, bias_;
    ConstView<T> x_;
    Buffer<T> y_, dx_;
};

}  // namespace moe
