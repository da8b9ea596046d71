#pragma once
// Linears of a graph that read the same value, run as one: the MMoE of a YAML file has three experts
// and two gates on `features`, five small GEMMs that become one (20 -> 198 outputs).
//
// The plan lists the members' weights one after the other, then their biases (GraphModel::
// for_each_parameter), so the ParameterStore holds them as one (sum of outputs) x in matrix and one
// bias vector: no copy of the parameters, each still its own state_dict tensor. Forward computes
// the stacked output once and copies each member's rows to its value; backward gathers the members'
// output gradients and does one GEMM for the weights and one for the input.
#include <vector>

#include "moe/core/buffer.hpp"
#include "moe/detail/row_sums.hpp"
#include "moe/graph/ops/linear.hpp"

namespace moe::graph {

template <class T>
class FusedLinear {
public:
    using Member = typename ops::Linear::template Run<T>;

    FusedLinear(std::vector<std::size_t> nodes, std::vector<Member*> members, std::size_t input)
        : nodes_(std::move(nodes)), members_(std::move(members)), input_(input) {
        for (Member* m : members_) {
            offsets_.push_back(total_);
            total_ += m->out_features();
        }
    }

    const std::vector<std::size_t>& nodes() const { return nodes_; }
    std::size_t input() const { return input_; }
    Index in_features() const { return members_.front()->in_features(); }

    /// Every member's output (out_i x rows, column-major) from x (in x rows).
    void forward(const T* x, Index rows, const std::vector<T*>& outs) { infer(x, rows, outs, y_); }
    void infer(const T* x, Index rows, const std::vector<T*>& outs, std::vector<T>& scratch) const {
        check_layout();
        scratch.resize(std::size_t(total_ * rows));
        MatrixView<T> y(scratch.data(), total_, rows);
        const bool bias = members_.front()->has_bias();
        if (bias) y.colwise() = bias_values();
        moe::detail::matmul<T>(y, weights_t(), true, ConstView<T>(x, in_features(), rows), false, bias);
        for (std::size_t m = 0; m < members_.size(); ++m)
            MatrixView<T>(outs[m], members_[m]->out_features(), rows) = y.middleRows(offsets_[m], members_[m]->out_features());
    }

    /// Adds the weight and bias gradients from the members' output gradients, and dx (when given).
    void backward(const T* x, Index rows, const std::vector<const T*>& douts, T* dx) {
        dy_.resize(std::size_t(total_ * rows));
        MatrixView<T> dy(dy_.data(), total_, rows);
        for (std::size_t m = 0; m < members_.size(); ++m)
            dy.middleRows(offsets_[m], members_[m]->out_features()) = ConstView<T>(douts[m], members_[m]->out_features(), rows);
        const ConstView<T> g = dy;
        if (members_.front()->has_bias()) {
            VectorView<T> db(members_.front()->bias.grad_vec().data(), total_);
            moe::detail::add_row_sums(g, db);
        }
        MatrixView<T> dw_t(members_.front()->weight.grad_vec().data(), in_features(), total_);  // x dy^T
        moe::detail::matmul<T>(dw_t, ConstView<T>(x, in_features(), rows), false, g, true, true);
        if (dx) {
            MatrixView<T> d(dx, in_features(), rows);
            moe::detail::matmul<T>(d, weights_t(), false, g, false, true);
        }
    }

private:
    /// The members' weights as one in x total column-major matrix (W^T of the stacked weight).
    ConstView<T> weights_t() const { return ConstView<T>(members_.front()->weight.value_vec().data(), in_features(), total_); }
    VectorView<T> bias_values() const { return VectorView<T>(members_.front()->bias.value_vec().data(), total_); }
    /// The store must have laid the members out back to back (GraphModel lists them so).
    void check_layout() const {
        for (std::size_t m = 1; m < members_.size(); ++m) {
            const bool weights = members_[m]->weight.value_vec().data() ==
                                 members_[m - 1]->weight.value_vec().data() + members_[m - 1]->weight.size();
            const bool biases = !members_[m]->has_bias() ||
                                members_[m]->bias.value_vec().data() == members_[m - 1]->bias.value_vec().data() + members_[m - 1]->bias.size();
            if (!weights || !biases) throw std::logic_error("moe::graph::FusedLinear: the members' parameters are not adjacent in the store");
        }
    }

    std::vector<std::size_t> nodes_;
    std::vector<Member*> members_;
    std::size_t input_;
    std::vector<Index> offsets_;
    Index total_ = 0;
    std::vector<T> y_, dy_;
};

}  // namespace moe::graph
