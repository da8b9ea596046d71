#pragma once
// A multi-layer perceptron built from a spec at run time, with PyTorch nn.Sequential numbering:
// every hidden layer is Linear, activation, [BatchNorm1d], [Dropout]; the last is Linear and an
// optional output activation. Indices count every module, so parameter names match a state_dict
// ("0.weight", "2.running_mean", "3.weight", ...).
//
//   the usual expert:  make_mlp_spec(in, {h}, out, relu, batchnorm, 0, /*output_activation=*/true)
//                      = Linear-ReLU-BatchNorm-Linear-ReLU
//   the usual tower:   make_mlp_spec(in, {h}, 1, relu, batchnorm, /*dropout=*/p, false)
//                      = Linear-ReLU-BatchNorm-Dropout-Linear
#include <optional>
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/layers/activations.hpp"
#include "moe/layers/batchnorm.hpp"
#include "moe/layers/dropout.hpp"
#include "moe/layers/linear.hpp"

namespace moe {

/// What an MLP is made of. sizes = {in, hidden..., out}: at least two entries, all positive.
struct MLPSpec {
    std::vector<Index> sizes;
    ActivationKind activation = ActivationKind::relu;
    bool batchnorm = false;          ///< BatchNorm1d after the activation of each hidden layer
    double dropout = 0.0;            ///< Dropout after each hidden layer when > 0; must be in [0, 1)
    bool output_activation = false;  ///< apply the activation after the last Linear too
    double bn_eps = 1e-5, bn_momentum = 0.1;
};

/// The spec of an MLP in -> hidden... -> out: the one place the models build their experts', towers'
/// and bottoms' specs.
inline MLPSpec make_mlp_spec(Index in, const std::vector<Index>& hidden, Index out, ActivationKind activation,
                             bool batchnorm, double dropout, bool output_activation) {
    MLPSpec s;
    s.sizes.push_back(in);
    s.sizes.insert(s.sizes.end(), hidden.begin(), hidden.end());
    s.sizes.push_back(out);
    s.activation = activation;
    s.batchnorm = batchnorm;
    s.dropout = dropout;
    s.output_activation = output_activation;
    return s;
}

/// Multi-layer perceptron. Shapes: x is sizes.front() x B, y is sizes.back() x B.
///
/// With groups = G > 1 it is G MLPs of the same spec evaluated together (a bank of experts or gates):
/// every layer is a GroupedLinear and the activations are stacked. GroupedInput::shared: every member
/// reads the same x (in x B), the first layer is one GEMM, y is (G out) x B with member g in rows
/// [g out, (g+1) out); row_blocks: x is (G in) x B; column_segments: member g runs on the columns of
/// its segment (forward_segments), x is in x S and y out x S. Parameter names are "{}.0.weight", ...,
/// with "{}" the member index (the store expands it), so they match a ModuleList of nn.Sequential.
///
/// Without BatchNorm and Dropout, a training batch of more than 128 samples runs in column blocks
/// of 128 through all layers (forward and the input gradients of backward), blocks on the threads:
/// the same results, with the activations of a block in cache (see docs/design.md, "Threading").
template <class T>
class MLP : public Composite<MLP<T>> {
public:
    using Scalar = T;
    using Spec = MLPSpec;

    /// always_indexed: members are named "{g}.0.weight", ... even when G = 1 (a ModuleList of one).
    MLP(const MLPSpec& spec, std::string name, Index groups, GroupedInput input, bool always_indexed = false)
        : spec_(spec), name_(std::move(name)), groups_(groups),
          input_(groups == 1 && input == GroupedInput::row_blocks ? GroupedInput::shared : input),
          always_indexed_(always_indexed) {
        detail::require(groups > 0, name_, ": groups must be positive, got ", groups);
        detail::require(spec.sizes.size() >= 2, name_, ": sizes needs at least an input and an output size, got ",
                        spec.sizes.size(), " entries");
        for (std::size_t i = 0; i < spec.sizes.size(); ++i)
            detail::require(spec.sizes[i] > 0, name_, ": sizes[", i, "] must be positive, got ", spec.sizes[i]);
        detail::require(spec.dropout >= 0.0 && spec.dropout < 1.0, name_, ": dropout p must be in [0, 1), got ",
                        spec.dropout);
        detail::require(!(spec.batchnorm && input_ == GroupedInput::column_segments), name_,
                        ": batchnorm is not supported with column segments (an expert may run on a single sample)");
        int index = 0;  // nn.Sequential module index
        const std::size_t n_linear = spec.sizes.size() - 1;
        for (std::size_t l = 0; l < n_linear; ++l) {
            const bool last = l + 1 == n_linear;
            const GroupedInput layer_input = input_ == GroupedInput::column_segments ? input_
                                             : l == 0                              ? input_
                                                                                   : GroupedInput::row_blocks;
            Block b{GroupedLinear<T>(groups, spec.sizes[l], spec.sizes[l + 1], layer_input, sub(index)), index, {}, -1, {}, -1,
                    {}, -1, {}, {}};
            ++index;
            if (!last || spec.output_activation) b.act_index = index, b.act.emplace(spec.activation, sub(index++));
            if (!last && spec.batchnorm) {
                b.bn_index = index;
                b.bn.emplace(groups * spec.sizes[l + 1], spec.bn_eps, spec.bn_momentum, sub(index++), groups);
            }
            if (!last && spec.dropout > 0.0) b.dropout_index = index, b.dropout.emplace(spec.dropout, 0, sub(index++));
            blocks_.push_back(std::move(b));
        }
    }
    /// shared_input true: GroupedInput::shared, false: row_blocks.
    explicit MLP(const MLPSpec& spec, std::string name = "moe::MLP", Index groups = 1, bool shared_input = true,
                 bool always_indexed = false)
        : MLP(spec, std::move(name), groups, shared_input ? GroupedInput::shared : GroupedInput::row_blocks, always_indexed) {}

    /// Rows of the input and of the output (all members together).
    Index in_features() const { return input_ == GroupedInput::row_blocks ? groups_ * spec_.sizes.front() : spec_.sizes.front(); }
    Index out_features() const { return input_ == GroupedInput::column_segments ? spec_.sizes.back() : groups_ * spec_.sizes.back(); }
    Index groups() const { return groups_; }
    bool shared_input() const { return input_ == GroupedInput::shared; }
    const MLPSpec& spec() const { return spec_; }
    const std::string& name() const { return name_; }

    /// The children in nn.Sequential order (Composite forwards parameters, init and mode to them).
    template <class F>
    void for_each_child(F&& f) {
        const std::string base = groups_ > 1 || always_indexed_ ? "{}" : "";
        for (auto& b : blocks_) {
            f(join_name(base, std::to_string(b.linear_index)), b.linear);
            if (b.act) f(join_name(base, std::to_string(b.act_index)), *b.act);
            if (b.bn) f(join_name(base, std::to_string(b.bn_index)), *b.bn);
            if (b.dropout) f(join_name(base, std::to_string(b.dropout_index)), *b.dropout);
        }
    }

    /// Training/evaluation forward. Keeps views for backward; x must outlive the backward call.
    const MatrixView<T>& forward(const ConstView<T>& x) {
        detail::check_rows(x, in_features(), name_, "forward");
        if (in_column_blocks(x.cols())) return forward_in_column_blocks(x);
        ConstView<T> h = x;
        for (auto& b : blocks_) h = after_linear(b, b.linear.forward(h));
        return last_output();
    }
    /// forward for GroupedInput::column_segments: member g on columns [offsets[g], offsets[g+1]) (see
    /// GroupedLinear::forward_segments; shared_columns applies to the first layer).
    const MatrixView<T>& forward_segments(const ConstView<T>& x, const Index* offsets, bool shared_columns) {
        detail::check_rows(x, in_features(), name_, "forward");
        ConstView<T> h = x;
        for (std::size_t i = 0; i < blocks_.size(); ++i)
            h = after_linear(blocks_[i], blocks_[i].linear.forward_segments(h, offsets, shared_columns && i == 0));
        return last_output();
    }

    /// Inference (evaluation semantics whatever the mode) into caller-owned scratch; caches nothing.
    /// `a` and `b` are two ping-pong buffers; the result lives in one of them.
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& a, Buffer<T>& b) const {
        detail::check_rows(x, in_features(), name_, "forward");
        return infer_blocks(x, a, b, [&](const GroupedLinear<T>& l, const ConstView<T>& h, Buffer<T>& out, std::size_t) -> const MatrixView<T>& {
            return l.infer(h, out);
        });
    }
    const MatrixView<T>& infer_segments(const ConstView<T>& x, const Index* offsets, bool shared_columns, Buffer<T>& a,
                                        Buffer<T>& b) const {
        detail::check_rows(x, in_features(), name_, "forward");
        return infer_blocks(x, a, b, [&](const GroupedLinear<T>& l, const ConstView<T>& h, Buffer<T>& out, std::size_t i) -> const MatrixView<T>& {
            return l.infer_segments(h, offsets, shared_columns && i == 0, out);
        });
    }

    /// Back-propagates dy (out x B); adds parameter gradients and returns dx (in x B), or an empty
    /// matrix when input_grad is false.
    const MatrixView<T>& backward(const ConstView<T>& dy, bool input_grad = true) {
        if (in_column_blocks(dy.cols())) return backward_in_column_blocks(dy, input_grad);
        ConstView<T> g = dy;
        for (std::size_t i = blocks_.size(); i-- > 0;) {
            auto& b = blocks_[i];
            if (b.dropout) g = b.dropout->backward(g);
            if (b.bn) g = b.bn->backward(g);
            if (b.act) g = b.act->backward(g);
            const MatrixView<T>& dx = b.linear.backward(g, input_grad || i > 0);
            if (i == 0) return dx;
            g = dx;
        }
        return blocks_.front().linear.backward(g);  // unreachable: there is always a block
    }

    const MatrixView<T>& output() const { return last_output(); }
    /// Column segments: sizes every buffer for up to `columns` columns (the most slots a batch can
    /// have), so that a step whose routing sends more samples to the experts allocates nothing.
    void reserve_columns(Index columns) {
        for (std::size_t l = 0; l < blocks_.size(); ++l) {
            auto& b = blocks_[l];
            b.linear.reserve_columns(columns);
            const Index rows = b.linear.output_rows();
            if (b.act) b.act->reserve(rows, columns);
            if (b.dropout) b.dropout->reserve(rows, columns);
        }
    }
    GroupedLinear<T>& linear(std::size_t i) { return blocks_.at(i).linear; }
    std::size_t num_linear() const { return blocks_.size(); }

private:
    struct Block {
        GroupedLinear<T> linear;
        int linear_index;
        std::optional<Activation<T>> act;
        int act_index;
        std::optional<BatchNorm1d<T>> bn;
        int bn_index;
        std::optional<Dropout<T>> dropout;
        int dropout_index;
        ConstView<T> dy_in, dlinear;  // the blocked backward's gradients at the block's output and linear output
    };
    std::string sub(int index) const { return name_ + "." + std::to_string(index); }

    /// Samples per block of the blocked training pass: gemm's tile width, so that a block's
    /// products are cut into the same tiles as the whole batch's (same bits either way).
    static constexpr Index kColumnBlock = detail::kTileCols;
    static_assert(kColumnBlock == detail::kRowSumBlock, "a block's bias-gradient sum must be add_row_sums' block");

    /// Whether a batch of `cols` samples runs in column blocks: more than one block, and layers that
    /// treat samples apart (BatchNorm's batch statistics and Dropout's masks, drawn in one pass over
    /// the batch, are not cut).
    bool in_column_blocks(Index cols) const {
        if (cols <= kColumnBlock || input_ == GroupedInput::column_segments) return false;
        for (const auto& b : blocks_)
            if (b.bn || b.dropout) return false;
        return true;
    }
    /// Whether the blocks of a batch run on the threads, each with single-threaded products, or one
    /// after another with each block's products over the threads. With fewer blocks than threads
    /// (batch 256 on 16 threads: 2 blocks) most threads would wait while a block's products have
    /// tiles for them (the default experts' layers: 8 per block). Either way each product is cut
    /// into the same tiles (gemm_many: no depth split) and the same code runs on each block: the
    /// same bits.
    bool blocks_on_threads(Index cols) const {
        const Index blocks = (cols + kColumnBlock - 1) / kColumnBlock;
        Index tiles = 1;  // output tiles of a block's widest product
        for (const auto& b : blocks_) tiles = std::max(tiles, b.linear.column_block_tiles());
        return blocks >= std::min<Index>(max_threads(), tiles);
    }
    /// body(c0, c1) for each block [c0, c1) of kColumnBlock samples: on the threads, or in order with
    /// the threads inside each block's products (blocks_on_threads).
    template <class F>
    void for_each_column_block(Index cols, F&& body) {
        if (blocks_on_threads(cols)) {
            parallel_for(cols, kColumnBlock, 2.0 * macs_per_sample() * double(cols), body);
            return;
        }
        for (Index c0 = 0; c0 < cols; c0 += kColumnBlock) body(c0, std::min(cols, c0 + kColumnBlock));
    }
    /// Multiply-adds per sample of all layers (the threading decision of the blocked pass).
    double macs_per_sample() const {
        double macs = 0;
        for (const auto& b : blocks_) macs += double(b.linear.output_rows()) * double(b.linear.in_features());
        return macs;
    }

    /// forward() one block of samples at a time: each block runs through every layer while its
    /// activations are in cache, instead of each layer streaming the whole batch through memory
    /// (at batch 2048 the experts' hidden layer alone is 16 MB), and blocks run on the threads with
    /// single-threaded products. Each layer's output still covers the whole batch (backward reads it);
    /// an activation whose derivative needs only its output (ReLU) writes it over the linear output.
    const MatrixView<T>& forward_in_column_blocks(const ConstView<T>& x) {
        ConstView<T> h = x;
        for (auto& b : blocks_) {
            MatrixView<T>& y = b.linear.begin_forward(h);
            h = y;
            if (b.act) h = b.act->derivative_from_output() ? b.act->begin_forward_in_place(y) : b.act->begin_forward(h);
        }
        for_each_column_block(x.cols(), [&](Index c0, Index c1) {
            for (auto& b : blocks_) {
                b.linear.forward_columns(c0, c1);
                if (b.act) b.act->forward_columns(c0, c1);
            }
        });
        return last_output();
    }

    /// backward() of forward_in_column_blocks: each block's gradients go down through every layer in
    /// cache (blocks on the threads), summed for the biases on the way; then the layers' weight
    /// gradients as products over the whole batch (reductions over samples: deep GEMMs, cut by
    /// detail::gemm_reductions), all in one parallel loop.
    const MatrixView<T>& backward_in_column_blocks(const ConstView<T>& dy, bool input_grad) {
        // Sizes (and checks) every gradient first: the blocks below only fill them in.
        // An activation writes its input gradient over the gradient the layer above gave it (not
        // over the caller's dy).
        ConstView<T> g = dy;
        MatrixView<T>* dx = nullptr;
        for (std::size_t i = blocks_.size(); i-- > 0;) {
            Block& b = blocks_[i];
            b.dy_in = g;
            if (b.act) b.dlinear = dx ? b.act->begin_backward_in_place(*dx) : b.act->begin_backward(g);
            else b.dlinear = g;
            dx = &b.linear.begin_backward(b.dlinear, input_grad || i > 0);
            g = *dx;
        }
        for_each_column_block(dy.cols(), [&](Index c0, Index c1) {
            for (std::size_t i = blocks_.size(); i-- > 0;) {
                Block& b = blocks_[i];
                if (b.act) b.act->backward_columns(b.dy_in, c0, c1);
                b.linear.backward_columns(b.dlinear, c0, c1);
            }
        });
        // Every layer's weight gradient in one parallel loop (a hidden layer's dW alone may have
        // fewer tiles than threads); same bits as each layer's own.
        Index products = 0;
        for (auto& b : blocks_) {
            b.linear.end_backward();
            products += b.linear.weight_grad_products();
        }
        detail::gemm_reductions<T>(products, [&](Index i) {
            std::size_t layer = 0;
            for (; i >= blocks_[layer].linear.weight_grad_products(); ++layer) i -= blocks_[layer].linear.weight_grad_products();
            return blocks_[layer].linear.weight_grad_product(blocks_[layer].dlinear, i);
        });
        return *dx;
    }

    ConstView<T> after_linear(Block& b, const MatrixView<T>& y) {
        ConstView<T> h = y;
        if (b.act) h = b.act->forward(h);
        if (b.bn) h = b.bn->forward(h);
        if (b.dropout) h = b.dropout->forward(h);
        return h;
    }
    template <class Linear>
    const MatrixView<T>& infer_blocks(const ConstView<T>& x, Buffer<T>& a, Buffer<T>& b, Linear&& linear) const {
        ConstView<T> h = x;
        Buffer<T>* out = &a;
        Buffer<T>* other = &b;
        for (std::size_t i = 0; i < blocks_.size(); ++i) {
            const Block& blk = blocks_[i];
            MatrixView<T>& y = out->view();
            h = linear(blk.linear, h, *out, i);
            // Activation and BatchNorm in place: one pass over the block's output, no second buffer.
            if (blk.act) detail::activation_forward(blk.act->kind(), ConstView<T>(y), y);
            if (blk.bn) blk.bn->infer_inplace(y);
            // Dropout is the identity at inference: skipped.
            std::swap(out, other);
        }
        return other->view();
    }
    const MatrixView<T>& last_output() const {
        const Block& b = blocks_.back();
        if (b.dropout) return b.dropout->output();
        if (b.bn) return b.bn->output();
        if (b.act) return b.act->output();
        return b.linear.output();
    }

    MLPSpec spec_;
    std::string name_;
    Index groups_;
    GroupedInput input_;
    bool always_indexed_;
    std::vector<Block> blocks_;
};

}  // namespace moe
