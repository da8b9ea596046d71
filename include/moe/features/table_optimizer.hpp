#pragma once
// TableOptimizer: one sparse optimizer per table of a FeatureInput, stepped together.
#include <vector>

#include "moe/core/threads.hpp"
#include "moe/features/feature_input.hpp"
#include "moe/optim/sparse_adagrad.hpp"
#include "moe/optim/sparse_adam.hpp"

namespace moe {

/// Steps every table of a FeatureInput with its row-sparse gradient of the last backward: Opt is
/// SparseAdam<T> (the default) or SparseAdagrad<T> (element-wise or row-wise), each table with its
/// own state, all with the same options. The dense parameters keep their own optimizer (Adam,
/// AdamW, SGD on the model's params()): the two together are one training step.
template <class T, class Opt = SparseAdam<T>>
class TableOptimizer {
public:
    explicit TableOptimizer(const FeatureInput<T>& input, typename Opt::Options options = {}) : options_(options) {
        for (Index t = 0; t < input.tables(); ++t) opt_.emplace_back(input.table(t).cols(), input.table(t).rows(), options);
    }

    /// One step of every table a gradient touched. All gradients are checked against their tables
    /// first: an error changes no table and no state.
    void step(FeatureInput<T>& input) {
        detail::require(input.tables() == Index(opt_.size()), "moe::TableOptimizer::step: built for ", opt_.size(),
                        " tables, the input has ", input.tables());
        for (Index t = 0; t < input.tables(); ++t)
            if (!input.grad(t).rows.empty())
                detail::check_row_sparse_grad(input.table(t), input.grad(t), input.table(t).cols(), input.table(t).rows(),
                                              "moe::TableOptimizer::step");
        // Tables over the threads: each optimizer steps its own table and state.
        double flops = 0;
        for (Index t = 0; t < input.tables(); ++t) flops += 8.0 * double(input.grad(t).values.view().size());
        parallel_for_each(input.tables(), flops, [&](Index t) {
            if (!input.grad(t).rows.empty()) opt_[std::size_t(t)].step(input.table(t), input.grad(t));
        });
    }

    /// The optimizer of table t (its state, e.g. for saving).
    Opt& table_optimizer(Index t) { return opt_.at(std::size_t(t)); }
    const Opt& table_optimizer(Index t) const { return opt_.at(std::size_t(t)); }
    Index tables() const { return Index(opt_.size()); }
    /// The options every table's optimizer was built with (set_lr changes only their lr).
    const typename Opt::Options& options() const { return options_; }
    /// Sets every table's learning rate (a schedule); finite and >= 0.
    void set_lr(double lr) {
        for (Opt& o : opt_) o.set_lr(lr);
        options_.lr = lr;
    }

private:
    typename Opt::Options options_;
    std::vector<Opt> opt_;
};

}  // namespace moe
