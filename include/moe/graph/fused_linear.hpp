#pragma once
// Linears of a graph that read the same value, run as one grouped GEMM: the MMoE of a YAML file has
// three experts and two gates on `features`, five small products that become one parallel loop
// over all their output tiles (detail::gemm_many, the library's grouped GEMM). Forward, each member
// writes its own value directly (a stacked output and its copy cost as much as the GEMM); backward,
// the output gradients are stacked so that the weight gradients are one deep GEMM.
#include <vector>

#include "moe/core/threads.hpp"
#include "moe/detail/gemm.hpp"
#include "moe/detail/row_sums.hpp"
#include "moe/graph/ops/linear.hpp"

namespace moe::graph {

template <class T>
class FusedLinear {
public:
    using Member = typename ops::Linear::template Run<T>;

    FusedLinear(std::vector<std::size_t> nodes, std::vector<Member*> members, std::size_t input)
        : nodes_(std::move(nodes)), members_(std::move(members)), input_(input) {}

    const std::vector<std::size_t>& nodes() const { return nodes_; }
    std::size_t input() const { return input_; }
    Index in_features() const { return members_.front()->in_features(); }

    /// Every member's output (out_i x rows, column-major) from x (in x rows).
    void infer(const T* x, Index rows, const std::vector<T*>& outs) const {
        const Index in = in_features();
        const bool bias = members_.front()->has_bias();
        if (bias) {
            double total = 0;
            for (const Member* m : members_) total += double(m->out_features());
            moe::detail::for_each_range(
                rows, moe::detail::kElementwiseFlops * total * double(rows), [&](Index c0, Index c1) {
                    for (std::size_t m = 0; m < members_.size(); ++m)
                        MatrixView<T>(outs[m] + c0 * members_[m]->out_features(), members_[m]->out_features(), c1 - c0)
                            .colwise() = members_[m]->bias.value_vec();
                });
        }
        moe::detail::gemm_many<T>(Index(members_.size()), [&](Index i) {
            const Member& m = *members_[std::size_t(i)];
            return moe::detail::GemmArgs<T>{true,
                                            false,
                                            m.out_features(),
                                            rows,
                                            in,
                                            T(1),
                                            m.weight.value_vec().data(),
                                            in,
                                            x,
                                            in,
                                            bias,
                                            outs[std::size_t(i)],
                                            m.out_features()};
        });
    }

    /// Adds the weight and bias gradients from the members' output gradients, and dx (when given;
    /// written when dx_fresh, as a kernel does its fresh input gradients). The output gradients are
    /// gathered into one stacked matrix first: the weight gradient is then one GEMM whose depth is
    /// the batch (split over threads), not one per member.
    void backward(const T* x, Index rows, const std::vector<const T*>& douts, T* dx, bool dx_fresh) {
        const Index in = in_features();
        Index total = 0;
        offsets_.clear();
        for (const Member* m : members_) {
            offsets_.push_back(total);
            total += m->out_features();
        }
        dy_.resize(std::size_t(total * rows));
        moe::detail::for_each_range(
            rows, moe::detail::kElementwiseFlops * double(total * rows), [&](Index c0, Index c1) {
                for (std::size_t m = 0; m < members_.size(); ++m) {
                    const Index o = members_[m]->out_features();
                    for (Index j = c0; j < c1; ++j)
                        std::copy(douts[m] + j * o, douts[m] + (j + 1) * o, dy_.data() + j * total + offsets_[m]);
                }
            });
        const ConstView<T> dy(dy_.data(), total, rows);
        if (members_.front()->has_bias()) {
            db_.setZero(total);
            moe::detail::add_row_sums(dy, db_);
            for (std::size_t m = 0; m < members_.size(); ++m)
                members_[m]->bias.grad_vec() += db_.segment(offsets_[m], members_[m]->out_features());
        }
        dwt_.resize(in, total);  // x dy^T, then each member's columns added to its gradient
        moe::detail::matmul<T>(dwt_, ConstView<T>(x, in, rows), false, dy, true, false);
        for (std::size_t m = 0; m < members_.size(); ++m) {
            auto g = members_[m]->weight.grad_t();
            g += dwt_.middleCols(offsets_[m], members_[m]->out_features());
        }
        if (!dx) return;
        wt_.resize(in, total);  // the members' W^T side by side (small: in x total)
        for (std::size_t m = 0; m < members_.size(); ++m)
            wt_.middleCols(offsets_[m], members_[m]->out_features()) = members_[m]->weight.value_t();
        MatrixView<T> d(dx, in, rows);
        moe::detail::matmul<T>(d, wt_, false, dy, false, !dx_fresh);
    }

private:
    std::vector<std::size_t> nodes_;
    std::vector<Member*> members_;
    std::size_t input_;
    std::vector<Index> offsets_;
    std::vector<T> dy_;
    Vector<T> db_;
    Matrix<T> dwt_, wt_;
};

}  // namespace moe::graph
