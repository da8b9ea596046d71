#pragma once
// A multi-layer perceptron built from a spec at run time, with PyTorch nn.Sequential numbering:
// every hidden layer is Linear, activation, [BatchNorm1d], [Dropout]; the last is Linear and an
// optional output activation. Indices count every module, so parameter names match a state_dict
// ("0.weight", "2.running_mean", "3.weight", ...).
//
//   Expert of the seed tutorial:    {sizes {in, h, out}, relu, batchnorm, output_activation}
//                                   = Linear-ReLU-BatchNorm-Linear-ReLU
//   TaskTower of the seed tutorial: {sizes {in, h, 1}, relu, batchnorm, dropout p}
//                                   = Linear-ReLU-BatchNorm-Dropout-Linear
#include <optional>
#include <string>
#include <vector>

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

/// Multi-layer perceptron. Shapes: x is sizes.front() x B, y is sizes.back() x B.
///
/// With groups = G > 1 it is G MLPs of the same spec evaluated together (a bank of experts or gates):
/// every layer is a GroupedLinear and the activations are stacked, y is (G out) x B with member g in
/// rows [g out, (g+1) out). With shared_input every member reads the same x (in x B) and the first
/// layer is one GEMM; otherwise x is (G in) x B. Parameter names are "{}.0.weight", ..., with "{}"
/// the member index (the store expands it), so they match a ModuleList of nn.Sequential.
template <class T>
class MLP {
public:
    using Scalar = T;
    using Spec = MLPSpec;

    /// always_indexed: members are named "{g}.0.weight", ... even when G = 1 (a ModuleList of one).
    explicit MLP(const MLPSpec& spec, std::string name = "moe::MLP", Index groups = 1, bool shared_input = true,
                 bool always_indexed = false)
        : spec_(spec), name_(std::move(name)), groups_(groups), shared_input_(shared_input || groups == 1),
          always_indexed_(always_indexed) {
        detail::require(groups > 0, name_, ": groups must be positive, got ", groups);
        detail::require(spec.sizes.size() >= 2, name_, ": sizes needs at least an input and an output size, got ",
                        spec.sizes.size(), " entries");
        for (std::size_t i = 0; i < spec.sizes.size(); ++i)
            detail::require(spec.sizes[i] > 0, name_, ": sizes[", i, "] must be positive, got ", spec.sizes[i]);
        detail::require(spec.dropout >= 0.0 && spec.dropout < 1.0, name_, ": dropout p must be in [0, 1), got ",
                        spec.dropout);
        int index = 0;  // nn.Sequential module index
        const std::size_t n_linear = spec.sizes.size() - 1;
        for (std::size_t l = 0; l < n_linear; ++l) {
            const bool last = l + 1 == n_linear;
            Block b{GroupedLinear<T>(groups, spec.sizes[l], spec.sizes[l + 1], l == 0 && shared_input_, sub(index)),
                    index, {}, {}, {}, -1};
            ++index;
            if (!last || spec.output_activation) b.act.emplace(spec.activation, sub(index++));
            if (!last && spec.batchnorm) {
                b.bn_index = index;
                b.bn.emplace(groups * spec.sizes[l + 1], spec.bn_eps, spec.bn_momentum, sub(index++), groups);
            }
            if (!last && spec.dropout > 0.0) b.dropout.emplace(spec.dropout, 0, sub(index++));
            blocks_.push_back(std::move(b));
        }
    }

    /// Rows of the input and of the output (all members together).
    Index in_features() const { return shared_input_ ? spec_.sizes.front() : groups_ * spec_.sizes.front(); }
    Index out_features() const { return groups_ * spec_.sizes.back(); }
    Index groups() const { return groups_; }
    bool shared_input() const { return shared_input_; }
    const MLPSpec& spec() const { return spec_; }
    const std::string& name() const { return name_; }

    /// Training/evaluation forward. Keeps views for backward; x must outlive the backward call.
    const MatrixView<T>& forward(const ConstView<T>& x) {
        detail::check_rows(x, in_features(), name_, "forward");
        ConstView<T> h = x;
        for (auto& b : blocks_) {
            h = b.linear.forward(h);
            if (b.act) h = b.act->forward(h);
            if (b.bn) h = b.bn->forward(h);
            if (b.dropout) h = b.dropout->forward(h);
        }
        return last_output();
    }

    /// Inference (evaluation semantics whatever the mode) into caller-owned scratch; caches nothing.
    /// `a` and `b` are two ping-pong buffers; the result lives in one of them.
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& a, Buffer<T>& b) const {
        detail::check_rows(x, in_features(), name_, "forward");
        ConstView<T> h = x;
        Buffer<T>* out = &a;
        Buffer<T>* other = &b;
        for (const auto& blk : blocks_) {
            MatrixView<T>& y = out->view();
            h = blk.linear.infer(h, *out);
            // Activation and BatchNorm in place: one pass over the block's output, no second buffer.
            if (blk.act) detail::activation_forward(blk.act->kind(), ConstView<T>(y), y);
            if (blk.bn) blk.bn->infer_inplace(y);
            // Dropout is the identity at inference: skipped.
            std::swap(out, other);
        }
        return other->view();
    }

    /// Back-propagates dy (out x B); adds parameter gradients and returns dx (in x B), or an empty
    /// matrix when input_grad is false.
    const MatrixView<T>& backward(const ConstView<T>& dy, bool input_grad = true) {
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

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        const std::string base = member_prefix(prefix);
        for (auto& b : blocks_) {
            b.linear.for_each_parameter(join_name(base, std::to_string(b.linear_index)), f);
            if (b.bn) b.bn->for_each_parameter(join_name(base, std::to_string(b.bn_index)), f);
        }
    }
    /// f(name, bn) for every BatchNorm1d; with groups > 1 the name holds "{}" for the member.
    template <class F>
    void for_each_batchnorm(const std::string& prefix, F&& f) {
        const std::string base = member_prefix(prefix);
        for (auto& b : blocks_)
            if (b.bn) f(join_name(base, std::to_string(b.bn_index)), *b.bn);
    }
    template <class F>
    void for_each_dropout(F&& f) {
        for (auto& b : blocks_)
            if (b.dropout) f(*b.dropout);
    }

    void reset_parameters(Rng& rng) {
        for (auto& b : blocks_) {
            b.linear.reset_parameters(rng);
            if (b.bn) b.bn->reset_parameters(rng);
            if (b.dropout) b.dropout->reset_parameters(rng);
        }
    }
    void set_training(bool on) {
        for (auto& b : blocks_) {
            if (b.bn) b.bn->set_training(on);
            if (b.dropout) b.dropout->set_training(on);
        }
    }
    void train() { set_training(true); }
    void eval() { set_training(false); }

    const MatrixView<T>& output() const { return last_output(); }
    GroupedLinear<T>& linear(std::size_t i) { return blocks_.at(i).linear; }
    std::size_t num_linear() const { return blocks_.size(); }

private:
    struct Block {
        GroupedLinear<T> linear;
        int linear_index;
        std::optional<Activation<T>> act;
        std::optional<BatchNorm1d<T>> bn;
        std::optional<Dropout<T>> dropout;
        int bn_index;
    };
    std::string sub(int index) const { return name_ + "." + std::to_string(index); }
    std::string member_prefix(const std::string& prefix) const {
        return groups_ > 1 || always_indexed_ ? join_name(prefix, "{}") : prefix;
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
    bool shared_input_;
    bool always_indexed_;
    std::vector<Block> blocks_;
};

}  // namespace moe
