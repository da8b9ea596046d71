#pragma once
// Data-parallel training on MPI (link moe::mpi): every rank holds the whole model and a shard of the
// data; each step, every rank computes the gradient of its part of the global batch and one
// MPI_Allreduce sums them, so that every rank takes the same optimizer step (Horovod's and PyTorch
// DDP's scheme).
//
//   MPI_Init(&argc, &argv);
//   moe::mpi::Communicator comm;                                         // MPI_COMM_WORLD
//   moe::MultiTaskData<float> mine = moe::mpi::shard(all, comm);         // or read only your rows
//   moe::mpi::fit(model, loss, mine, &valid_mine, options, comm);        // batch_size is per rank
//   MPI_Finalize();
#include <algorithm>
#include <string>
#include <vector>

#include "moe/io/model_file.hpp"
#include "moe/mpi/communicator.hpp"
#include "moe/train/fit.hpp"

namespace moe::mpi {

/// Settings of distributed training beyond FitOptions.
struct DistributedOptions {
    /// Written by rank 0 after every epoch (atomically: a model file, see moe::save), when not empty.
    /// Resume with moe::load on any number of ranks.
    std::string checkpoint;
};

/// Rows r of `all` with r % comm.size() == comm.rank(): this rank's shard (strided, so that every
/// shard sees every part of a sorted file). Labels, mask, surfaces and teacher columns follow.
template <class T>
MultiTaskData<T> shard(const MultiTaskData<T>& all, int rank, int size) {
    ::moe::detail::require(size >= 1 && rank >= 0 && rank < size, "moe::mpi::shard: rank ", rank, " of ", size, " ranks");
    std::vector<Index> rows;
    for (Index r = rank; r < all.size(); r += size) rows.push_back(r);
    const auto n = Index(rows.size());
    MultiTaskData<T> out;
    out.x.resize(all.x.rows(), n);
    out.labels.resize(all.labels.rows(), n);
    if (all.mask.size()) out.mask.resize(all.mask.rows(), n);
    if (all.teacher.size()) out.teacher.resize(all.teacher.rows(), n);
    for (Index j = 0; j < n; ++j) {
        const Index r = rows[std::size_t(j)];
        out.x.col(j) = all.x.col(r);
        out.labels.col(j) = all.labels.col(r);
        if (all.mask.size()) out.mask.col(j) = all.mask.col(r);
        if (all.teacher.size()) out.teacher.col(j) = all.teacher.col(r);
        if (!all.surfaces.empty()) out.surfaces.push_back(all.surfaces[std::size_t(r)]);
    }
    return out;
}
template <class T>
MultiTaskData<T> shard(const MultiTaskData<T>& all, const Communicator& comm) {
    return shard(all, comm.rank(), comm.size());
}

/// Per-task metrics of the model over all ranks' shards of a data set: each rank predicts its own
/// shard, the predictions, labels and masks are gathered on every rank, and the metrics are those
/// of the whole data set (an exact AUC, not a mean of per-rank AUCs). Every rank gets the same.
template <class M, class T = typename M::Scalar>
std::vector<TaskMetrics> evaluate(const M& model, const MultiTaskData<T>& mine, const Communicator& comm, Index batch_size = 4096) {
    std::vector<Matrix<T>> preds;
    comm.agree([&] {
        mine.check(model.in_features(), model.tasks(), "evaluate", model.surfaces());
        preds = predict_all(model, mine.x, batch_size, ::moe::detail::surface_ids(mine.surfaces));
    });
    auto gather = [&](const Matrix<T>& m) {
        const std::vector<T> all = comm.all_gather(std::vector<T>(m.data(), m.data() + m.size()));
        return Matrix<T>(Eigen::Map<const Matrix<T>>(all.data(), m.rows(), Index(all.size()) / std::max<Index>(1, m.rows())));
    };
    std::vector<Matrix<T>> all_preds;
    for (const auto& p : preds) all_preds.push_back(gather(p));
    const Matrix<T> labels = gather(mine.labels);
    // A rank without a mask counts every sample: gather ones for it so that the shapes line up.
    const int masked = comm.sum(mine.mask.size() ? 1 : 0);
    Matrix<T> mask;
    if (masked > 0) mask = gather(mine.mask.size() ? mine.mask : Matrix<T>(Matrix<T>::Ones(mine.labels.rows(), mine.labels.cols())));
    return ::moe::detail::task_metrics(model.tasks(), all_preds, labels, mask);
}

namespace detail {

/// fit()'s batches on one rank: the plain source's, with the gradient summed over the ranks after
/// backward (each rank's share weighted by its part of every task's divisor, so that the sum is
/// the gradient of the global batch's loss), and every batch's loss agreed on.
template <class M>
class DistributedSource : public ::moe::detail::DenseFitSource<M> {
public:
    using T = typename M::Scalar;
    using Base = ::moe::detail::DenseFitSource<M>;

    DistributedSource(Model<M>& model, MultiTaskLoss<T>& loss, const MultiTaskData<T>& train, const MultiTaskData<T>* valid,
                      Index batch_size, Index samples, const Communicator& comm)
        : Base(model, train, valid, batch_size), model_(model), loss_(loss), valid_(valid), samples_(samples), comm_(comm) {
        shares_.resize(loss.tasks().size());
        scaled_.resize(loss.tasks().size());
        views_.resize(loss.tasks().size());
    }

    /// Every rank steps through the same number of batches: the smallest shard's sample count.
    Index size() const { return samples_; }

    T agree_on_loss(T total) {
        const int bad = comm_.sum(std::isfinite(double(total)) ? 0 : 1);
        if (bad > 0 && std::isfinite(double(total)))
            throw numeric_error(::moe::detail::concat("moe::mpi::fit: the loss of ", bad, " other rank(s) is not finite at this step; "
                                                      "stopped on every rank before the step, the parameters are those of the last good step"));
        return total;
    }

    void backward(const std::vector<ConstView<T>>& d) {
        for (std::size_t t = 0; t < d.size(); ++t) shares_[t] = double(loss_.divisor(t));
        std::vector<double> totals = shares_;
        comm_.sum(totals.data(), Index(totals.size()));
        for (std::size_t t = 0; t < d.size(); ++t) {
            const T share = totals[t] > 0 ? T(shares_[t] / totals[t]) : T(0);
            auto& s = scaled_[t].resize(d[t].rows(), d[t].cols());
            s = d[t] * share;
            views_[t] = s;
        }
        Base::backward(views_);
        auto& g = model_.params().grads();
        comm_.sum(g.data(), g.size());
    }

    std::vector<TaskMetrics> validate() const { return valid_ ? evaluate(model_, *valid_, comm_) : std::vector<TaskMetrics>{}; }

private:
    Model<M>& model_;
    MultiTaskLoss<T>& loss_;
    const MultiTaskData<T>* valid_;
    Index samples_;
    const Communicator& comm_;
    std::vector<double> shares_;
    std::vector<Buffer<T>> scaled_;
    std::vector<ConstView<T>> views_;
};

}  // namespace detail

/// Data-parallel fit() on every rank of comm: the same options, checks, errors and history as
/// moe::fit, with
///   - rank 0's parameters broadcast to all ranks first (the ranks may have built the model from
///     different seeds);
///   - each rank training on `mine`, its shard (see shard()); o.batch_size samples per rank and
///     step, so the global batch is o.batch_size x ranks; every rank steps through as many batches
///     as the smallest shard has (the other shards' extra samples, at most ranks - 1 with strided
///     shards, are never used);
///   - the gradient of the global batch's loss summed with one MPI_Allreduce per step: every rank
///     takes the same Adam step and holds the same parameters;
///   - validation metrics over all ranks' validation shards (`valid` on every rank, or on none);
///   - the epoch callback's decision taken from rank 0 (all ranks stop together);
///   - a bad shard (a check that fails on one rank) stopping every rank with that rank's message,
///     and a non-finite loss on one rank stopping all of them at the same step;
///   - a checkpoint written by rank 0 after every epoch when d.checkpoint is set.
/// Not supported yet (config_error): uncertainty weighting (its log-variances would need a
/// reduction of their own) and distillation. BatchNorm statistics are per rank, as in DDP without
/// SyncBatchNorm; rank 0's are the ones a checkpoint holds. The history's train losses are rank 0's
/// own batches'.
template <class M>
FitHistory fit(Model<M>& model, MultiTaskLoss<typename M::Scalar>& loss, const MultiTaskData<typename M::Scalar>& mine,
               const MultiTaskData<typename M::Scalar>* valid, FitOptions o, const Communicator& comm,
               const DistributedOptions& d = {}) {
    const int has_valid = comm.sum(valid ? 1 : 0);
    comm.agree([&] {
        ::moe::detail::require(has_valid == 0 || has_valid == comm.size(), "moe::mpi::fit: ", has_valid, " of ", comm.size(),
                               " ranks have validation data; give it on every rank or on none");
        ::moe::detail::require(loss.weighting() == TaskWeighting::fixed,
                               "moe::mpi::fit: uncertainty weighting is not supported in distributed training yet");
        ::moe::detail::check_fit_options(o);
        ::moe::detail::check_fit_loss(model.tasks(), loss);
        mine.check(model.in_features(), model.tasks(), "train", model.surfaces());
        ::moe::detail::require(mine.size() >= 2, "moe::mpi::fit: the training shard has ", mine.size(),
                               " sample; a step needs at least 2 (BatchNorm cannot train on one)");
        if (valid) valid->check(model.in_features(), model.tasks(), "validation", model.surfaces());
    });
    comm.agree([&] {
        // Every surface of a tower tree among all ranks' training samples.
        if (model.surfaces() == 1) return;
        std::vector<long long> seen(std::size_t(model.surfaces()), 0);
        for (Index s : mine.surfaces) ++seen[std::size_t(s)];
        comm.sum(seen.data(), Index(seen.size()));
        for (Index s = 0; s < model.surfaces(); ++s)
            ::moe::detail::require(seen[std::size_t(s)] > 0, "moe::mpi::fit: surface ", s, " has no training samples on any rank");
    });
    auto& values = model.params().values();
    comm.broadcast(values.data(), values.size(), 0);
    const Index samples = comm.min(mine.size());
    if (o.on_epoch || !d.checkpoint.empty()) {
        const auto user = o.on_epoch;
        o.on_epoch = [&, user](const EpochReport& r) {
            int go = 1;
            comm.agree([&] {
                if (user) go = user(r) ? 1 : 0;
                if (!d.checkpoint.empty() && comm.rank() == 0) save(model, d.checkpoint);
            });
            comm.broadcast(&go, 1, 0);
            return go != 0;
        };
    }
    if (comm.rank() != 0) o.progress = Progress::silent;
    detail::DistributedSource<M> source(model, loss, mine, valid, o.batch_size, samples, comm);
    return ::moe::detail::fit_loop(model, loss, source, o);
}

}  // namespace moe::mpi
