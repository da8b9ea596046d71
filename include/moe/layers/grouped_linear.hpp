#pragma once
// G independent linear maps evaluated together: the layers of a bank of experts, gates or towers.
//
// The G weights are stacked row-major as one (G out) x in matrix, so their transposes form one
// column-major in x (G out) matrix. Three ways to feed the groups (GroupedInput):
//   shared           every group reads the same x (in x B): the first layer of E experts, or the
//                    T gates, is one GEMM of (G out) x in by in x B; y is (G out) x B.
//   row_blocks       x is (G in) x B, group g reads rows [g in, (g+1) in): one GEMM per group.
//   column_segments  the groups of a sparse mixture: x is in x S, group g reads the columns of its
//                    segment [offsets[g], offsets[g+1]) and writes the same columns of y (out x S);
//                    offsets are given per call (forward_segments), one GEMM per group.
#include <algorithm>
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

/// How the groups of a GroupedLinear (or a grouped MLP) get their inputs; see grouped_linear.hpp.
enum class GroupedInput { shared, row_blocks, column_segments };


/// G linear maps y_g = W_g x_g + b_g, each as torch.nn.Linear(in, out).
/// Shapes: shared input: x is in x B, y (G out) x B, group g in rows [g out, (g+1) out); row blocks:
/// x is (G in) x B; column segments: x is in x S and y out x S (forward_segments).
/// Parameters: `weight` (G out) x in and `bias` (G out) x 1, listed per group as "{}.weight"-style
/// names when G > 1 or always_indexed (a ModuleList of one: "0.weight"; the store expands "{}" to the
/// group index). Init: PyTorch's nn.Linear default. With bias = false there is no bias (nn.Linear(...,
/// bias=False)): no "bias" parameter, y = W x.
template <class T>
class GroupedLinear {
public:
    using Scalar = T;

    GroupedLinear(Index groups, Index in_features, Index out_features, GroupedInput input,
                  std::string name = "moe::GroupedLinear", bool always_indexed = false, bool bias = true)
        : name_(std::move(name)), groups_(groups), input_(groups == 1 && input == GroupedInput::row_blocks ? GroupedInput::shared : input),
          always_indexed_(always_indexed), has_bias_(bias),
          weight_(groups * out_features, in_features, groups), bias_(bias ? groups * out_features : 0, 1, groups) {
        check_scalar<T>();
        detail::require(groups > 0, name_, ": groups must be positive, got ", groups);
        detail::require(in_features > 0 && out_features > 0, name_,
                        ": in_features and out_features must be positive, got ", in_features, " and ", out_features);
    }
    /// shared_input true: GroupedInput::shared, false: GroupedInput::row_blocks.
    GroupedLinear(Index groups, Index in_features, Index out_features, bool shared_input,
                  std::string name = "moe::GroupedLinear", bool always_indexed = false)
        : GroupedLinear(groups, in_features, out_features, shared_input ? GroupedInput::shared : GroupedInput::row_blocks,
                        std::move(name), always_indexed) {}

    Index groups() const { return groups_; }
    bool has_bias() const { return has_bias_; }
    GroupedInput input() const { return input_; }
    bool shared_input() const { return input_ == GroupedInput::shared; }
    /// Per-group sizes.
    Index in_features() const { return weight_.cols; }
    Index out_features() const { return weight_.rows / groups_; }
    /// Rows of the whole input and output.
    Index input_rows() const { return input_ == GroupedInput::row_blocks ? groups_ * in_features() : in_features(); }
    Index output_rows() const { return input_ == GroupedInput::column_segments ? out_features() : weight_.rows; }
    const std::string& name() const { return name_; }

    /// y = W x + b. Keeps a view of x for backward: x must stay alive and unchanged until then.
    const MatrixView<T>& forward(const ConstView<T>& x) {
        require_mode(false, "forward");
        x_ = x;
        return infer(x, y_);
    }

    /// Inference into a caller-owned buffer: caches nothing, safe on a const layer from many threads.
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& out) const {
        require_mode(false, "infer");
        detail::check_rows(x, input_rows(), name_, "forward");
        auto& y = out.resize(output_rows(), x.cols());
        // The GEMM kernel accumulates, so start from the bias instead of zeros: one pass fewer.
        detail::for_each_range(x.cols(), detail::kElementwiseFlops * double(y.size()), [&](Index c0, Index c1) {
            if (has_bias_) y.middleCols(c0, c1 - c0).colwise() = bias_.value_vec();
            else y.middleCols(c0, c1 - c0).setZero();
        });
        if (shared_input()) {
            detail::matmul<T>(y, weight_.value_t(), true, x, false, /*accumulate=*/true);
        } else {  // row blocks: group g's rows of x to its rows of y, all groups' tiles in one loop
            const Index in = in_features(), o = out_features(), n = x.cols();
            const T* w = weight_.value_vec().data();
            detail::gemm_many<T>(groups_, [&](Index g) {
                return detail::GemmArgs<T>{true, false, o, n, in, T(1), w + g * o * in, in, x.data() + g * in, x.outerStride(),
                                           true, y.data() + g * o, y.outerStride()};
            });
        }
        return y;
    }

    /// Column segments: group g maps columns [offsets[g], offsets[g+1]) of x to the same columns of
    /// y (out x S, S = offsets[G]); with shared_columns every group reads columns [0, its length) of
    /// x instead (every expert on every token: no gather needed). offsets must stay valid until
    /// backward. Keeps a view of x.
    const MatrixView<T>& forward_segments(const ConstView<T>& x, const Index* offsets, bool shared_columns) {
        require_mode(true, "forward_segments");
        x_ = x;
        offsets_ = offsets;
        shared_columns_ = shared_columns;
        return infer_segments(x, offsets, shared_columns, y_);
    }
    const MatrixView<T>& infer_segments(const ConstView<T>& x, const Index* offsets, bool shared_columns,
                                        Buffer<T>& out) const {
        require_mode(true, "infer_segments");
        detail::check_rows(x, in_features(), name_, "forward");
        const Index in = in_features(), o = out_features(), slots = offsets[groups_];
        auto& y = out.resize(o, slots);
        const T* w = weight_.value_vec().data();
        // Start from the biases (the products accumulate): column ranges over the threads, each
        // range the part of every segment it overlaps.
        detail::for_each_range(slots, detail::kElementwiseFlops * double(y.size()), [&](Index c0, Index c1) {
            for (Index g = 0; g < groups_; ++g) {
                const Index begin = std::max(c0, offsets[g]), end = std::min(c1, offsets[g + 1]);
                if (begin >= end) continue;
                if (has_bias_) y.middleCols(begin, end - begin).colwise() = bias_.value_vec().segment(g * o, o);
                else y.middleCols(begin, end - begin).setZero();
            }
        });
        // Every (expert, column tile) is a task: 16 experts keep 16 threads busy, and so does one.
        detail::gemm_many<T>(groups_, [&](Index g) {
            const Index begin = offsets[g];
            const T* xg = x.data() + (shared_columns ? 0 : begin) * x.outerStride();
            return detail::GemmArgs<T>{true, false, o, offsets[g + 1] - begin, in, T(1), w + g * o * in, in, xg,
                                       x.outerStride(), true, y.data() + begin * o, o};
        }, detail::kExpertTiles);
        return y;
    }

    /// Adds dW = dy x^T and db = sum of dy over the batch per group; returns dx = W^T dy, or an empty
    /// matrix when input_grad is false (the first layer of a model needs none). With column segments
    /// and shared columns, dx sums every group's part (in x the longest segment).
    const MatrixView<T>& backward(const ConstView<T>& dy, bool input_grad = true) {
        if (input_ == GroupedInput::column_segments) return backward_segments(dy, input_grad);
        check_output_grad(dy);
        if (has_bias_) detail::add_row_sums(dy, bias_.grad_vec());
        add_weight_grads(dy);
        if (!input_grad) return dx_.resize(0, 0);
        const Index in = in_features(), n = dy.cols();
        if (shared_input()) {
            auto& dx = dx_.resize(in, n);
            detail::matmul<T>(dx, weight_.value_t(), false, dy, false);
            return dx;
        }
        auto& dx = dx_.resize(groups_ * in, n);
        input_grad_into(dy, dx);
        return dx;
    }

    // The training pass in column blocks (MLP runs every layer on one block of samples while it is
    // in cache): begin_forward keeps x and sizes the output for the whole batch, forward_columns
    // computes columns [c0, c1) of it; backward: begin_backward checks dy and sizes dx,
    // backward_columns takes columns [c0, c1) of dy (one block of detail::kRowSumBlock, as
    // add_row_sums cuts them) to the bias gradient's block sum and to dx's columns, end_backward
    // adds the block sums in order; the caller runs dW over the whole batch as weight_grad_product's
    // products (several layers' in one loop). Shared input or row blocks only.
    // The output begin_forward returns is the caller's to overwrite after forward_columns (an
    // activation in place); backward does not read it.
    // Products per block are cut into gemm's tiles and nothing else (no depth split): with blocks
    // that start at multiples of detail::kTileCols a column gets the same bits as in forward() and
    // backward(), and so does the bias gradient; but for dx of a shared input when backward()'s
    // product had few tiles and a long depth (gemm then splits the depth: another summation order).
    MatrixView<T>& begin_forward(const ConstView<T>& x) {
        require_mode(false, "begin_forward");
        detail::check_rows(x, input_rows(), name_, "forward");
        x_ = x;
        return y_.resize(output_rows(), x.cols());
    }
    /// Output tiles of forward_columns' products on one block (gemm_many's cut).
    Index column_block_tiles() const {
        const Index rows = shared_input() ? output_rows() : out_features();
        return (shared_input() ? 1 : groups_) * ((rows + detail::kTileRows - 1) / detail::kTileRows);
    }
    void forward_columns(Index c0, Index c1) {
        MatrixView<T>& y = y_.view();
        MatrixView<T> yb(y.data() + c0 * y.rows(), y.rows(), c1 - c0);
        if (has_bias_) yb.colwise() = bias_.value_vec();
        else yb.setZero();
        const ConstView<T> xb(x_.data() + c0 * x_.outerStride(), x_.rows(), c1 - c0, x_.outerStride());
        const Index in = in_features(), o = shared_input() ? output_rows() : out_features();
        const T* w = weight_.value_vec().data();
        detail::gemm_many<T>(shared_input() ? 1 : groups_, [&](Index g) {
            return detail::GemmArgs<T>{true, false, o, c1 - c0, in, T(1), w + g * o * in, in, xb.data() + g * in, xb.outerStride(),
                                       true, yb.data() + g * o, yb.outerStride()};
        });
    }
    /// dx for the whole batch when input_grad (input_rows() x B), else an empty matrix.
    MatrixView<T>& begin_backward(const ConstView<T>& dy, bool input_grad) {
        require_mode(false, "begin_backward");
        check_output_grad(dy);
        if (has_bias_) bias_parts_.resize(output_rows(), (dy.cols() + detail::kRowSumBlock - 1) / detail::kRowSumBlock);
        blocked_input_grad_ = input_grad;
        return input_grad ? dx_.resize(input_rows(), dy.cols()) : dx_.resize(0, 0);
    }
    void backward_columns(const ConstView<T>& dy, Index c0, Index c1) {
        if (has_bias_)
            detail::sum_columns(dy, 0, dy.rows(), c0, c1, bias_parts_.view().col(c0 / detail::kRowSumBlock).data());
        if (!blocked_input_grad_) return;
        MatrixView<T>& dx = dx_.view();
        MatrixView<T> dxb(dx.data() + c0 * dx.rows(), dx.rows(), c1 - c0);
        input_grad_into(ConstView<T>(dy.data() + c0 * dy.outerStride(), dy.rows(), c1 - c0, dy.outerStride()), dxb);
    }
    /// The weight gradient as products for detail::gemm_reductions (dW_g += dy_g x_g^T; a shared
    /// input: dW^T += x dy^T, one product), so that a caller can run several layers' in one loop.
    Index weight_grad_products() const { return shared_input() ? 1 : groups_; }
    detail::GemmArgs<T> weight_grad_product(const ConstView<T>& dy, Index g) {
        const Index in = in_features(), n = dy.cols();
        if (shared_input())  // dW^T = x dy^T: in x (G out)
            return {false, true, in, output_rows(), n, T(1), x_.data(), x_.outerStride(), dy.data(), dy.outerStride(),
                    true, weight_.grad_vec().data(), in};
        const Index o = out_features();
        return {false, true, in, o, n, T(1), x_.data() + g * in, x_.outerStride(), dy.data() + g * o, dy.outerStride(),
                true, weight_.grad_vec().data() + g * o * in, in};
    }
    /// The blocked backward's bias gradient: its block sums added in order.
    void end_backward() {
        if (has_bias_)
            for (Index k = 0; k < bias_parts_.cols(); ++k) bias_.grad_vec() += bias_parts_.view().col(k);
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        // A grouped MLP puts the "{}" in its own prefix ("experts.{}.0"); otherwise it goes here.
        const bool add_slot = (groups_ > 1 || always_indexed_) && prefix.find("{}") == std::string::npos;
        const std::string p = add_slot ? join_name(prefix, "{}") : prefix;
        f(join_name(p, "weight"), weight_);
        if (has_bias_) f(join_name(p, "bias"), bias_);
    }

    /// PyTorch's default init, group after group: U(-1/sqrt(in), 1/sqrt(in)) for weight, then bias.
    void reset_parameters(Rng& rng) {
        for (Index g = 0; g < groups_; ++g) reset_group(g, rng);
    }
    /// The init of one group (its weight, then its bias): for models that initialise expert by expert.
    void reset_group(Index g, Rng& rng) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(in_features()));
        const Index wsize = out_features() * in_features(), bsize = out_features();
        T* w = weight_.value_vec().data() + g * wsize;
        for (Index i = 0; i < wsize; ++i) w[i] = static_cast<T>(rng.uniform(-bound, bound));
        if (!has_bias_) return;
        T* b = bias_.value_vec().data() + g * bsize;
        for (Index i = 0; i < bsize; ++i) b[i] = static_cast<T>(rng.uniform(-bound, bound));
    }

    void set_training(bool) {}
    /// Sizes the output and input-gradient buffers for up to `columns` columns (column segments: the
    /// most slots a batch can have), so that varying routing never allocates.
    void reserve_columns(Index columns) {
        y_.reserve(output_rows() * columns);
        dx_.reserve(input_rows() * columns);
    }

    Param<T>& weight() { return weight_; }
    Param<T>& bias() { return bias_; }
    const Param<T>& weight() const { return weight_; }
    const Param<T>& bias() const { return bias_; }
    const MatrixView<T>& output() const { return y_.view(); }

private:
    void check_output_grad(const ConstView<T>& dy) const {
        detail::check_shape(dy, output_rows(), x_.cols(), name_, "backward", "output gradient");
    }
    /// dW += dy x^T over the batch: one reduction product per group (shared input: one for all).
    void add_weight_grads(const ConstView<T>& dy) {
        detail::gemm_reductions<T>(weight_grad_products(), [&](Index i) { return weight_grad_product(dy, i); });
    }
    /// dx = W^T dy, group by group (shared input: one product), every tile in one parallel loop.
    void input_grad_into(const ConstView<T>& dy, MatrixView<T>& dx) const {
        const Index in = in_features(), o = shared_input() ? output_rows() : out_features(), n = dy.cols();
        const T* w = weight_.value_vec().data();
        detail::gemm_many<T>(shared_input() ? 1 : groups_, [&](Index g) {
            return detail::GemmArgs<T>{false, false, in, n, o, T(1), w + g * o * in, in, dy.data() + g * o, dy.outerStride(),
                                       false, dx.data() + (shared_input() ? 0 : g * in), dx.outerStride()};
        });
    }
    void require_mode(bool segments, const char* fn) const {
        if (segments != (input_ == GroupedInput::column_segments))
            throw config_error(detail::concat(name_, "::", fn, ": this layer's groups are ",
                                              segments ? "not column segments" : "column segments (use forward_segments)"));
    }

    const MatrixView<T>& backward_segments(const ConstView<T>& dy, bool input_grad) {
        const Index in = in_features(), o = out_features(), slots = offsets_[groups_];
        detail::check_shape(dy, o, slots, name_, "backward", "output gradient");
        T* dw = weight_.grad_vec().data();
        const T* w = weight_.value_vec().data();
        if (has_bias_)
            for (Index g = 0; g < groups_; ++g) {  // db_g over the group's columns
                const Index begin = offsets_[g], len = offsets_[g + 1] - begin;
                if (len > 0)
                    detail::add_row_sums(ConstView<T>(dy.data() + begin * dy.outerStride(), o, len, dy.outerStride()),
                                         bias_.grad_vec().segment(g * o, o));
            }
        // dW_g = dy_g x_g^T over the group's columns: every group's tiles in one parallel loop (a
        // loop of one product per group would fork and join once per group, on few tiles each).
        detail::gemm_many<T>(groups_, [&](Index g) {
            const Index begin = offsets_[g], len = offsets_[g + 1] - begin;
            const T* xg = x_.data() + (shared_columns_ ? 0 : begin) * x_.outerStride();
            return detail::GemmArgs<T>{false, true, in, o, len, T(1), xg, x_.outerStride(), dy.data() + begin * dy.outerStride(),
                                       dy.outerStride(), true, dw + g * o * in, in};
        }, detail::kExpertTiles);
        if (!input_grad) return dx_.resize(0, 0);
        if (shared_columns_) {  // every group adds into the same dx: one after another
            auto& dx = dx_.zeros(in, x_.cols());
            for (Index g = 0; g < groups_; ++g)
                detail::gemm<T>(false, false, in, offsets_[g + 1] - offsets_[g], o, T(1), w + g * o * in, in,
                                dy.data() + offsets_[g] * dy.outerStride(), dy.outerStride(), true, dx.data(), in);
            return dx;
        }
        auto& dx = dx_.resize(in, slots);
        detail::gemm_many<T>(groups_, [&](Index g) {
            const Index begin = offsets_[g];
            return detail::GemmArgs<T>{false, false, in, offsets_[g + 1] - begin, o, T(1), w + g * o * in, in,
                                       dy.data() + begin * dy.outerStride(), dy.outerStride(), false, dx.data() + begin * in, in};
        }, detail::kExpertTiles);
        return dx;
    }

    std::string name_;
    Index groups_;
    GroupedInput input_;
    bool always_indexed_, has_bias_;
    Param<T> weight_, bias_;
    ConstView<T> x_;
    const Index* offsets_ = nullptr;
    bool shared_columns_ = false;
    bool blocked_input_grad_ = false;
    Buffer<T> y_, dx_, bias_parts_;
};

}  // namespace moe
