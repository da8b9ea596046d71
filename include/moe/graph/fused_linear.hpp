#pragma once
// Linears of a graph that read the same value, run as one: the MMoE of a YAML file has three
// experts and two gates on `features`, five small products that become one. Forward, large batches
// run one grouped GEMM (detail::gemm_many: one parallel loop over every member's output tiles, each
// member writing its own value directly), small batches one GEMM of the stacked weights and a copy
// of each member's rows; backward, the output gradients are stacked (a ReLU that only reads a
// member is done in that gather) so that the weight gradients are one deep GEMM.
#include <vector>

#include "moe/core/threads.hpp"
#include "moe/detail/gemm.hpp"
#include "moe/detail/row_sums.hpp"
#include "moe/layers/activations.hpp"
#include "moe/graph/ops/linear.hpp"

namespace moe::graph {

template <class T>
class FusedLinear {
public:
    using Member = typename ops::Linear::template Run<T>;

    FusedLinear(std::vector<std::size_t> nodes, std::vector<Member*> members, std::size_t input)
        : nodes_(std::move(nodes)), members_(std::move(members)), input_(input) {
        for (const Member* m : members_) {  // member m's rows in the stacked outputs
            offsets_.push_back(total_);
            total_ += m->out_features();
        }
    }

    /// Batches of at least this many rows run as a grouped GEMM (see infer).
    static constexpr Index kGroupedMinRows = 1024;

    const std::vector<std::size_t>& nodes() const { return nodes_; }
    std::size_t input() const { return input_; }
    Index in_features() const { return members_.front()->in_features(); }

    /// The small-batch path of infer: one GEMM of the
    /// members' weights side by side (copied into `w`, small: in x total) into the stacked output
    /// `y`, whose rows are then copied to each member's value (columns spread over the threads).
    void infer_stacked(const T* x, Index rows, const std::vector<T*>& outs, Matrix<T>& w, std::vector<T>& y) const {
        const Index in = in_features(), total = total_;
        stack_weights(w);
        y.resize(std::size_t(total * rows));
        MatrixView<T> yv(y.data(), total, rows);
        const bool bias = members_.front()->has_bias();
        if (bias)
            moe::detail::for_each_range(
                rows, moe::detail::kElementwiseFlops * double(total * rows), [&](Index c0, Index c1) {
                    for (std::size_t m = 0; m < members_.size(); ++m)
                        yv.block(offsets_[m], c0, members_[m]->out_features(), c1 - c0).colwise() =
                            members_[m]->bias.value_vec();
                });
        moe::detail::matmul<T>(yv, w, true, ConstView<T>(x, in, rows), false, bias);
        moe::detail::for_each_range(
            rows, moe::detail::kElementwiseFlops * double(total * rows), [&](Index c0, Index c1) {
                for (std::size_t m = 0; m < members_.size(); ++m) {
                    const Index o = members_[m]->out_features(), row = offsets_[m];
                    for (Index j = c0; j < c1; ++j)
                        std::copy(y.data() + j * total + row, y.data() + j * total + row + o, outs[m] + j * o);
                }
            });
    }
    /// Every member's output (out_i x rows, column-major) from x (in x rows), `w` and `y` scratch.
    /// Large batches: one grouped GEMM (gemm_many) whose products write the members' values directly;
    /// small ones: one GEMM into a stacked output and a copy (measured, bench_graph: below about 1000
    /// rows the grouped GEMM's per-tile cost, gates of 3 outputs included, outweighs the copy).
    void infer(const T* x, Index rows, const std::vector<T*>& outs, Matrix<T>& w, std::vector<T>& y) const {
        if (rows < kGroupedMinRows) return infer_stacked(x, rows, outs, w, y);
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

    void forward(const T* x, Index rows, const std::vector<T*>& outs) { infer(x, rows, outs, wt_, y_); }

    /// Adds the weight and bias gradients from the members' output gradients, and dx (when given;
    /// written when dx_fresh, as a kernel does its fresh input gradients). The output gradients are
    /// gathered into one stacked matrix first: the weight gradient is then one GEMM whose depth is
    /// the batch (split over threads), not one per member. A member whose output only a ReLU reads
    /// gives that ReLU's output gradient and output (relu_outs[m], else null): the ReLU's backward
    /// happens in the gather (dy = dout where the ReLU's output is positive), one pass fewer.
    void backward(const T* x, Index rows, const std::vector<const T*>& douts, const std::vector<const T*>& relu_outs,
                  T* dx, bool dx_fresh) {
        const Index in = in_features(), total = total_;
        dy_.resize(std::size_t(total * rows));
        moe::detail::for_each_range(
            rows, moe::detail::kElementwiseFlops * double(total * rows), [&](Index c0, Index c1) {
                for (std::size_t m = 0; m < members_.size(); ++m) {
                    const Index o = members_[m]->out_features();
                    if (const T* y = relu_outs[m]) {
                        for (Index j = c0; j < c1; ++j)
                            moe::detail::relu_backward_span(y + j * o, douts[m] + j * o, dy_.data() + j * total + offsets_[m], o);
                    } else {
                        for (Index j = c0; j < c1; ++j)
                            std::copy(douts[m] + j * o, douts[m] + (j + 1) * o, dy_.data() + j * total + offsets_[m]);
                    }
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
        stack_weights(wt_);
        MatrixView<T> d(dx, in, rows);
        moe::detail::matmul<T>(d, wt_, false, dy, false, !dx_fresh);
    }

private:
    /// The members' W^T side by side, in x total (small: copied per use, the weights change each step).
    void stack_weights(Matrix<T>& w) const {
        w.resize(in_features(), total_);
        for (std::size_t m = 0; m < members_.size(); ++m)
            w.middleCols(offsets_[m], members_[m]->out_features()) = members_[m]->weight.value_t();
    }

    std::vector<std::size_t> nodes_;
    std::vector<Member*> members_;
    std::size_t input_;
    std::vector<Index> offsets_;  // member m's first row in the stacked outputs
    Index total_ = 0;             // the members' outputs together
    std::vector<T> dy_, y_;
    Vector<T> db_;
    Matrix<T> dwt_, wt_;
};

}  // namespace moe::graph
