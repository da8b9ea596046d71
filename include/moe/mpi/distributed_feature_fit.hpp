#pragma once
// Data-parallel training of a FeatureModel (ID features) on MPI: as mpi::fit of a plain model, and
// the embedding tables' row-sparse gradients summed over the ranks without densifying a table:
// every rank all-gathers the rows the others touched and their values, and sums them per row, so
// that every rank's table optimizer takes the same step.
#include <algorithm>
#include <numeric>
#include <vector>

#include "moe/features/feature_fit.hpp"
#include "moe/io/feature_model_file.hpp"
#include "moe/mpi/distributed_fit.hpp"

namespace moe::mpi {

/// Samples r of `all` with r % size == rank: this rank's shard of a FeatureData (the bags, labels,
/// mask, surfaces and teacher columns of those samples).
template <class T>
FeatureData<T> shard(const FeatureData<T>& all, int rank, int size) {
    const std::vector<Index> rows = detail::strided_rows(all.size(), rank, size);
    FeatureData<T> out;
    gather_samples(all.features, rows.data(), Index(rows.size()), out.features);
    detail::copy_sample_columns(all, rows, out);
    return out;
}
template <class T>
FeatureData<T> shard(const FeatureData<T>& all, const Communicator& comm) {
    return shard(all, comm.rank(), comm.size());
}

/// Per-task metrics of a FeatureModel over all ranks' shards (see evaluate of a plain model).
template <class Net, class T = typename Net::Scalar>
std::vector<TaskMetrics> evaluate(const FeatureModel<Net>& model, const FeatureData<T>& mine, const Communicator& comm,
                                  Index batch_size = 4096) {
    std::vector<Matrix<T>> preds;
    comm.agree([&] {
        mine.check(model.input(), model.tasks(), "evaluate", model.surfaces());
        preds = predict_all(model, mine.features, batch_size, ::moe::detail::surface_ids(mine.surfaces));
    });
    return detail::gathered_metrics(model.tasks(), preds, mine.labels, mine.mask, comm);
}

namespace detail {

/// A table's row-sparse gradient (dim x rows) summed over the ranks, in place: the union of the
/// ranks' rows, each row's values added in rank order (the same bits on every rank).
template <class T>
void sum_rows(RowSparseGrad<T>& g, Index dim, const Communicator& comm) {
    const std::vector<std::int64_t> rows = comm.all_gather(g.rows);
    const auto& v = g.values.view();
    const std::vector<T> values = comm.all_gather(std::vector<T>(v.data(), v.data() + dim * Index(g.rows.size())));
    // Positions in rank order, stably sorted by row: each row's parts stay in rank order.
    std::vector<std::size_t> order(rows.size());
    std::iota(order.begin(), order.end(), std::size_t(0));
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return rows[a] < rows[b]; });
    g.rows.clear();
    for (const std::size_t p : order)
        if (g.rows.empty() || g.rows.back() != rows[p]) g.rows.push_back(rows[p]);
    auto& out = g.values.zeros(dim, Index(g.rows.size()));
    Index slot = -1;
    std::int64_t last = -1;
    for (const std::size_t p : order) {
        if (slot < 0 || rows[p] != last) ++slot, last = rows[p];
        out.col(slot) += Eigen::Map<const Vector<T>>(values.data() + std::ptrdiff_t(p) * dim, dim);
    }
}

/// fit()'s batches of a FeatureModel on one rank: the plain source's, with the dense gradients
/// (the net's and the attention features') summed by MPI_Allreduce and every table's row-sparse
/// gradient summed by sum_rows before the steps.
template <class Net, class Opt>
class DistributedFeatureSource : public ::moe::detail::FeatureFitSource<Net, Opt> {
public:
    using T = typename Net::Scalar;
    using Base = ::moe::detail::FeatureFitSource<Net, Opt>;

    DistributedFeatureSource(FeatureModel<Net>& model, MultiTaskLoss<T>& loss, const FeatureData<T>& train, const FeatureData<T>* valid,
                             TableOptimizer<T, Opt>& tables, const FitOptions& o, Index samples, const Communicator& comm)
        : Base(model, train, valid, tables, o), model_(model), loss_(loss), valid_(valid), samples_(samples), comm_(comm) {}

    Index size() const { return samples_; }
    T agree_on_loss(T total) { return agreed_loss(total, comm_); }

    void backward(const std::vector<ConstView<T>>& d) {
        Base::backward(shares_.scale(loss_, d, comm_));
        for (ParameterStore<T>* store : {&model_.params(), &model_.input().attention_params()}) {
            auto& g = store->grads();
            comm_.sum(g.data(), g.size());
        }
        FeatureInput<T>& in = model_.input();
        for (Index t = 0; t < in.tables(); ++t) sum_rows(in.own_grad(t), in.table(t).rows(), comm_);
    }

    std::vector<TaskMetrics> validate() const { return valid_ ? evaluate(model_, *valid_, comm_) : std::vector<TaskMetrics>{}; }

private:
    FeatureModel<Net>& model_;
    MultiTaskLoss<T>& loss_;
    const FeatureData<T>* valid_;
    Index samples_;
    const Communicator& comm_;
    TaskShares<T> shares_;
};

}  // namespace detail

/// Data-parallel fit() of a FeatureModel: as mpi::fit of a plain model (rank 0's parameters,
/// attention parameters and tables broadcast first; the same checks, agreement on errors, early
/// stopping and checkpoints, here FeatureModel files), with the tables stepped by `tables` on every
/// rank from the sum of the ranks' row-sparse gradients (only the rows some rank touched travel).
template <class Net, class Opt>
FitHistory fit(FeatureModel<Net>& model, TableOptimizer<typename Net::Scalar, Opt>& tables, MultiTaskLoss<typename Net::Scalar>& loss,
               const FeatureData<typename Net::Scalar>& mine, const FeatureData<typename Net::Scalar>* valid, FitOptions o,
               const Communicator& comm, const DistributedOptions& d = {}) {
    using T = typename Net::Scalar;
    const int has_valid = comm.sum(valid ? 1 : 0);
    comm.agree([&] {
        detail::check_distributed(has_valid, loss, comm);
        ::moe::detail::check_fit_options(o);
        ::moe::detail::check_fit_loss(model.tasks(), loss);
        ::moe::detail::require(tables.tables() == model.input().tables(), "moe::mpi::fit: the table optimizer has ", tables.tables(),
                               " tables, the model's input ", model.input().tables());
        mine.check(model.input(), model.tasks(), "train", model.surfaces());
        ::moe::detail::require(mine.size() >= 2, "moe::mpi::fit: the training shard has ", mine.size(),
                               " sample; a step needs at least 2 (BatchNorm cannot train on one)");
        if (valid) valid->check(model.input(), model.tasks(), "validation", model.surfaces());
    });
    detail::check_surfaces_trained(mine.surfaces, model.surfaces(), comm);
    for (ParameterStore<T>* store : {&model.params(), &model.input().attention_params()})
        comm.broadcast(store->values().data(), store->values().size(), 0);
    for (Index t = 0; t < model.input().tables(); ++t) comm.broadcast(model.input().table(t).data(), model.input().table(t).size(), 0);
    detail::distribute_callback(o, comm, d, [&] { save(model, d.checkpoint); });
    detail::DistributedFeatureSource<Net, Opt> source(model, loss, mine, valid, tables, o, comm.min(mine.size()), comm);
    try {
        FitHistory h = ::moe::detail::fit_loop(model, loss, source, o);
        source.restore_lr();
        return h;
    } catch (...) {
        source.restore_lr();
        throw;
    }
}

/// As above with a fresh SparseAdam on the tables at fit's lr.
template <class Net>
FitHistory fit(FeatureModel<Net>& model, MultiTaskLoss<typename Net::Scalar>& loss, const FeatureData<typename Net::Scalar>& mine,
               const FeatureData<typename Net::Scalar>* valid, const FitOptions& o, const Communicator& comm,
               const DistributedOptions& d = {}) {
    SparseAdamOptions so;
    so.lr = o.lr;
    TableOptimizer<typename Net::Scalar> tables(model.input(), so);
    return fit(model, tables, loss, mine, valid, o, comm, d);
}

}  // namespace moe::mpi
