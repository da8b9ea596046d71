#pragma once
// G independent linear maps evaluated together: the layers of a bank of experts, gates or towers.
//
// The G weights are stacked row-major as one (G out) x in matrix, so their transposes form one
// column-major in x (G out) matrix. With a shared input (the first layer of E experts, or the T gates,
// all reading x) the whole layer is one GEMM; with grouped inputs each group is one GEMM on its
// row block, the groups spread over threads.
#include <cmath>
#include <string>

#include "moe/core/buffer.hpp"
#include "moe/core/parameters.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/threads.hpp"
#include "moe/core/view.hpp"
#include "moe/detail/gemm.hpp"
#include "moe/detail/row_sums.hpp"

namespace moe {

namespace detail {
/// Run f(g) for g in [0, groups): over OpenMP threads when there is enough work for each thread,
/// otherwise in order (and each f may then thread its own GEMM).
template <class F>
void for_each_group(Index groups, double work_per_group, F&& f) {
    const int threads = max_threads();
#ifdef _OPENMP
    if (threads > 1 && groups >= threads && work_per_group * double(groups) >= kParallelWork) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (Index g = 0; g < groups; ++g) f(g);
        return;
    }
#endif
    (void)threads;
    (void)work_per_group;
    for (Index g = 0; g < groups; ++g) f(g);
}
}  // namespace detail

/// G linear maps y_g = W_g x_g + b_g, each as torch.nn.Linear(in, out).
/// Shapes: with shared_input x is in x B (every group reads it); otherwise x is (G in) x B and group
/// g reads rows [g in, (g+1) in). y is (G out) x B, group g in rows [g out, (g+1) out).
/// Parameters: `weight` (G out) x in and `bias` (G out) x 1, listed per group as "{}.weight"-style
/// names when G > 1 or always_indexed (a ModuleList of one: "0.weight"; the store expands "{}" to the
/// group index). Init: PyTorch's nn.Linear default.
template <class T>
class GroupedLinear {
public:
    using Scalar = T;

    GroupedLinear(Index groups, Index in_features, Index out_features, bool shared_input,
                  std::string name = "moe::GroupedLinear", bool always_indexed = false)
        : name_(std::move(name)), groups_(groups), shared_input_(shared_input || groups == 1),
          always_indexed_(always_indexed),
          weight_(groups * out_features, in_features, groups), bias_(groups * out_features, 1, groups) {
        check_scalar<T>();
        detail::require(groups > 0, name_, ": groups must be positive, got ", groups);
        detail::require(in_features > 0 && out_features > 0, name_,
                        ": in_features and out_features must be positive, got ", in_features, " and ", out_features);
    }

    Index groups() const { return groups_; }
    bool shared_input() const { return shared_input_; }
    /// Per-group sizes.
    Index in_features() const { return weight_.cols; }
    Index out_features() const { return weight_.rows / groups_; }
    /// Rows of the whole input and output.
    Index input_rows() const { return shared_input_ ? in_features() : groups_ * in_features(); }
    Index output_rows() const { return weight_.rows; }
    const std::string& name() const { return name_; }

    /// y = W x + b. Keeps a view of x for backward: x must stay alive and unchanged until then.
    const MatrixView<T>& forward(const ConstView<T>& x) {
        x_ = x;
        return infer(x, y_);
    }

    /// Inference into a caller-owned buffer: caches nothing, safe on a const layer from many threads.
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& out) const {
        detail::check_rows(x, input_rows(), name_, "forward");
        auto& y = out.resize(output_rows(), x.cols());
        // The GEMM kernel accumulates, so start from the bias instead of zeros: one pass fewer.
        y.colwise() = bias_.value_vec();
        if (shared_input_) {
            detail::matmul<T>(y, weight_.value_t(), true, x, false, /*accumulate=*/true);
        } else {
            const Index in = in_features(), o = out_features(), n = x.cols();
            const T* w = weight_.value_vec().data();
            detail::for_each_group(groups_, double(in) * double(o) * double(n), [&](Index g) {
                detail::gemm<T>(true, false, o, n, in, T(1), w + g * o * in, in, x.data() + g * in, x.outerStride(), true,
                                y.data() + g * o, y.outerStride());
            });
        }
        return y;
    }

    /// Adds dW = dy x^T and db = sum of dy over the batch per group; returns dx = W^T dy, or an empty
    /// matrix when input_grad is false (the first layer of a model needs none).
    const MatrixView<T>& backward(const ConstView<T>& dy, bool input_grad = true) {
        detail::check_shape(dy, output_rows(), x_.cols(), name_, "backward", "output gradient");
        detail::add_row_sums(dy, bias_.grad_vec());
        const Index in = in_features(), o = out_features(), n = dy.cols();
        if (shared_input_) {
            auto dw_t = weight_.grad_t();  // dW^T = x dy^T, in x (G out)
            detail::matmul<T>(dw_t, x_, false, dy, true, /*accumulate=*/true);
            if (!input_grad) return dx_.resize(0, 0);
            auto& dx = dx_.resize(in, n);
            detail::matmul<T>(dx, weight_.value_t(), false, dy, false);
            return dx;
        }
        T* dw = weight_.grad_vec().data();
        const T* w = weight_.value_vec().data();
        auto& dx = input_grad ? dx_.resize(groups_ * in, n) : dx_.resize(0, 0);
        detail::for_each_group(groups_, 2.0 * double(in) * double(o) * double(n), [&](Index g) {
            detail::gemm<T>(false, true, in, o, n, T(1), x_.data() + g * in, x_.outerStride(), dy.data() + g * o,
                            dy.outerStride(), true, dw + g * o * in, in);
            if (input_grad)
                detail::gemm<T>(false, false, in, n, o, T(1), w + g * o * in, in, dy.data() + g * o, dy.outerStride(), false,
                                dx.data() + g * in, dx.outerStride());
        });
        return dx;
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        // A grouped MLP puts the "{}" in its own prefix ("experts.{}.0"); otherwise it goes here.
        const bool add_slot = (groups_ > 1 || always_indexed_) && prefix.find("{}") == std::string::npos;
        const std::string p = add_slot ? join_name(prefix, "{}") : prefix;
        f(join_name(p, "weight"), weight_);
        f(join_name(p, "bias"), bias_);
    }

    /// PyTorch's default init, group after group: U(-1/sqrt(in), 1/sqrt(in)) for weight, then bias.
    void reset_parameters(Rng& rng) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(in_features()));
        const Index wsize = out_features() * in_features(), bsize = out_features();
        for (Index g = 0; g < groups_; ++g) {
            T* w = weight_.value_vec().data() + g * wsize;
            T* b = bias_.value_vec().data() + g * bsize;
            for (Index i = 0; i < wsize; ++i) w[i] = static_cast<T>(rng.uniform(-bound, bound));
            for (Index i = 0; i < bsize; ++i) b[i] = static_cast<T>(rng.uniform(-bound, bound));
        }
    }

    void set_training(bool) {}

    Param<T>& weight() { return weight_; }
    Param<T>& bias() { return bias_; }
    const Param<T>& weight() const { return weight_; }
    const Param<T>& bias() const { return bias_; }
    const MatrixView<T>& output() const { return y_.view(); }

private:
    std::string name_;
    Index groups_;
    bool shared_input_;
    bool always_indexed_;
    Param<T> weight_, bias_;
    ConstView<T> x_;
    Buffer<T> y_, dx_;
};

}  // namespace moe
