#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "moe/core/buffer.hpp"
#include "moe/core/parameters.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/view.hpp"
#include "moe/detail/row_sums.hpp"

namespace moe {

/// Batch normalisation over the batch for each feature, as torch.nn.BatchNorm1d on (B, F) input.
/// Shapes: x, y are F x B; weight (gamma) and bias (beta) are F x 1.
/// Training: normalises with the batch mean and biased variance, and updates the running statistics
/// with PyTorch's rule running = (1 - momentum) running + momentum batch, using the unbiased variance.
/// Evaluation: normalises with the running statistics. Buffers: running_mean, running_var,
/// num_batches_tracked (PyTorch's names).
template <class T>
class BatchNorm1d {
public:
    using Scalar = T;

    /// `parts` > 1 stacks the BatchNorms of `parts` experts (features = parts x each): each part is
    /// listed as its own state_dict tensors ("{}.weight" names, the store expands "{}").
    explicit BatchNorm1d(Index features, double eps = 1e-5, double momentum = 0.1, std::string name = "moe::BatchNorm1d",
                         Index parts = 1)
        : name_(std::move(name)), eps_(eps), momentum_(momentum), weight_(features, 1, parts), bias_(features, 1, parts),
          running_mean_(Vector<T>::Zero(features)), running_var_(Vector<T>::Ones(features)) {
        detail::require(features > 0, name_, ": features must be positive, got ", features);
        detail::require(eps > 0, name_, ": eps must be positive, got ", eps);
        detail::require(momentum >= 0 && momentum <= 1, name_, ": momentum must be in [0, 1], got ", momentum);
    }

    Index features() const { return weight_.rows; }
    const std::string& name() const { return name_; }

    const MatrixView<T>& forward(const ConstView<T>& x) {
        detail::check_rows(x, features(), name_, "forward");
        const Index n = x.cols();
        auto& y = y_.resize(features(), n);
        auto& xhat = xhat_.resize(features(), n);
        if (!training_) {
            inv_std_ = (running_var_.array() + T(eps_)).rsqrt().matrix();
            xhat = ((x.colwise() - running_mean_).array().colwise() * inv_std_.array()).matrix();
        } else {
            if (n < 2)
                throw shape_error(detail::concat(name_, "::forward: training needs more than 1 sample per batch, got ", n,
                                                 " (PyTorch refuses this too)"));
            mean_.setZero(features());
            detail::add_row_sums(x, mean_);
            mean_ /= T(n);
            xhat = x.colwise() - mean_;
            const ConstView<T> xc = xhat;
            var_.setZero(features());
            detail::add_row_dots(xc, xc, var_);
            var_ /= T(n);  // biased, used to normalise
            inv_std_ = (var_.array() + T(eps_)).rsqrt().matrix();
            xhat = (xhat.array().colwise() * inv_std_.array()).matrix();
            const T m = T(momentum_);
            running_mean_ = (T(1) - m) * running_mean_ + m * mean_;
            running_var_ = (T(1) - m) * running_var_ + m * (var_ * (T(n) / T(n - 1)));
            ++num_batches_tracked_;
        }
        y = ((xhat.array().colwise() * weight_.value_vec().array()).colwise() + bias_.value_vec().array()).matrix();
        return y;
    }

    /// Inference with the running statistics into a caller-owned buffer; caches nothing.
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& out) const {
        detail::check_rows(x, features(), name_, "forward");
        auto& y = out.resize(features(), x.cols());
        apply_running_statistics(x, y);
        return y;
    }

    /// infer() in place on y (features x B).
    void infer_inplace(MatrixView<T>& y) const {
        detail::check_rows(y, features(), name_, "forward");
        apply_running_statistics(y, y);
    }
    const MatrixView<T>& backward(const ConstView<T>& dy) {
        detail::check_shape(dy, features(), xhat_.cols(), name_, "backward", "output gradient");
        const auto& xhat = xhat_.view();
        const ConstView<T> xh = xhat;
        detail::add_row_dots(dy, xh, weight_.grad_vec());
        detail::add_row_sums(dy, bias_.grad_vec());
        auto& dx = dx_.resize(features(), dy.cols());
        if (!training_) {
            scale_ = weight_.value_vec().cwiseProduct(inv_std_);
            dx = (dy.array().colwise() * scale_.array()).matrix();
            return dx;
        }
        const T n = T(dy.cols());
        // dx = gamma * inv_std / N * (N dy - sum(dy) - xhat * sum(dy * xhat)), per feature.
        sum_dy_.setZero(features());
        sum_dy_xhat_.setZero(features());
        detail::add_row_sums(dy, sum_dy_);
        detail::add_row_dots(dy, xh, sum_dy_xhat_);
        scale_ = weight_.value_vec().cwiseProduct(inv_std_) / n;
        dx = ((n * dy.array() - xhat.array().colwise() * sum_dy_xhat_.array()).colwise() - sum_dy_.array()).matrix();
        dx = (dx.array().colwise() * scale_.array()).matrix();
        return dx;
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        const std::string p = parts() > 1 && prefix.find("{}") == std::string::npos ? join_name(prefix, "{}") : prefix;
        f(join_name(p, "weight"), weight_);
        f(join_name(p, "bias"), bias_);
    }
    Index parts() const { return weight_.parts; }

    /// gamma = 1, beta = 0, running statistics reset (PyTorch's init).
    void reset_parameters(Rng&) {
        weight_.value.setOnes();
        bias_.value.setZero();
        running_mean_.setZero();
        running_var_.setOnes();
        num_batches_tracked_ = 0;
    }
    void set_training(bool on) { training_ = on; }
    bool training() const { return training_; }

    Vector<T>& running_mean() { return running_mean_; }
    Vector<T>& running_var() { return running_var_; }
    const Vector<T>& running_mean() const { return running_mean_; }
    const Vector<T>& running_var() const { return running_var_; }
    std::int64_t& num_batches_tracked() { return num_batches_tracked_; }
    std::int64_t num_batches_tracked() const { return num_batches_tracked_; }
    double eps() const { return eps_; }
    double momentum() const { return momentum_; }
    Param<T>& weight() { return weight_; }
    Param<T>& bias() { return bias_; }
    const Param<T>& weight() const { return weight_; }
    const Param<T>& bias() const { return bias_; }
    const MatrixView<T>& output() const { return y_.view(); }

private:
    /// y = x * scale + shift per feature, scale and shift from the running statistics. Column by
    /// column over chunks of features: the batch is column-major, and a row-by-row walk strides
    /// through memory (it was two thirds of a BatchNorm model's predict time). A chunk's scale and
    /// shift live on the stack, because infer is const, runs on several threads at once and must
    /// not allocate. x may be y (in place).
    template <class Src>
    void apply_running_statistics(const Src& x, MatrixView<T>& y) const {
        constexpr Index kChunk = 128;
        alignas(64) T scale[kChunk];
        alignas(64) T shift[kChunk];
        for (Index i0 = 0; i0 < features(); i0 += kChunk) {
            const Index m = std::min(kChunk, features() - i0);
            for (Index i = 0; i < m; ++i) {
                scale[i] = weight_.value(i0 + i, 0) / std::sqrt(running_var_(i0 + i) + T(eps_));
                shift[i] = bias_.value(i0 + i, 0) - running_mean_(i0 + i) * scale[i];
            }
            const Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> s(scale, m), b(shift, m);
            for (Index j = 0; j < x.cols(); ++j)
                y.col(j).segment(i0, m).array() = x.col(j).segment(i0, m).array() * s + b;
        }
    }

    std::string name_;
    double eps_, momentum_;
    bool training_ = true;
    Param<T> weight_, bias_;
    Vector<T> running_mean_, running_var_;
    std::int64_t num_batches_tracked_ = 0;
    Vector<T> mean_, var_, inv_std_, scale_, sum_dy_, sum_dy_xhat_;  // per-feature scratch
    Buffer<T> y_, xhat_, dx_;
};

}  // namespace moe
