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

namespace detail {
/// Rows r of [0, n) with r % size == rank: a rank's strided shard.
inline std::vector<Index> strided_rows(Index n, int rank, int size) {
    ::moe::detail::require(size >= 1 && rank >= 0 && rank < size, "moe::mpi::shard: rank ", rank, " of ", size, " ranks");
    std::vector<Index> rows;
    for (Index r = rank; r < n; r += size) rows.push_back(r);
    return rows;
}
/// The per-sample columns every data set has (labels, mask, teacher, surfaces) of `rows`, into `to`.
template <class Data>
void copy_sample_columns(const Data& from, const std::vector<Index>& rows, Data& to) {
    const auto n = Index(rows.size());
    to.labels.resize(from.labels.rows(), n);
    if (from.mask.size()) to.mask.resize(from.mask.rows(), n);
    if (from.teacher.size()) to.teacher.resize(from.teacher.rows(), n);
    for (Index j = 0; j < n; ++j) {
        const Index r = rows[std::size_t(j)];
        to.labels.col(j) = from.labels.col(r);
        if (from.mask.size()) to.mask.col(j) = from.mask.col(r);
        if (from.teacher.size()) to.teacher.col(j) = from.teacher.col(r);
        if (!from.surfaces.empty()) to.surfaces.push_back(from.surfaces[std::size_t(r)]);
    }
}
}  // namespace detail

/// Rows r of `all` with r % comm.size() == comm.rank(): this rank's shard (strided, so that every
/// shard sees every part of a sorted file). Labels, mask, surfaces and teacher columns follow.
template <class T>
MultiTaskData<T> shard(const MultiTaskData<T>& all, int rank, int size) {
    const std::vector<Index> rows = detail::strided_rows(all.size(), rank, size);
    MultiTaskData<T> out;
    out.x.resize(all.x.rows(), Index(rows.size()));
    for (std::size_t j = 0; j < rows.size(); ++j) out.x.col(Index(j)) = all.x.col(rows[j]);
    detail::copy_sample_columns(all, rows, out);
    return out;
}
template <class T>
MultiTaskData<T> shard(const MultiTaskData<T>& all, const Communicator& comm) {
    return shard(all, comm.rank(), comm.size());
}

namespace detail {
/// Per-task metrics of every rank's predictions (task t: outputs_t x n_rank), labels and mask
/// (T x n_rank; empty for "all counted"), gathered on every rank: the metrics of the whole data set.
template <class T>
std::vector<TaskMetrics> gathered_metrics(const std::vector<TaskSpec>& tasks, const std::vector<Matrix<T>>& preds,
                                          const Matrix<T>& labels, const Matrix<T>& mask, const Communicator& comm) {
    auto gather = [&](const Matrix<T>& m) {
        const std::vector<T> all = comm.all_gather(std::vector<T>(m.data(), m.data() + m.size()));
        return Matrix<T>(Eigen::Map<const Matrix<T>>(all.data(), m.rows(), Index(all.size()) / std::max<Index>(1, m.rows())));
    };
    std::vector<Matrix<T>> all_preds;
    for (const auto& p : preds) all_preds.push_back(gather(p));
    const Matrix<T> all_labels = gather(labels);
    // A rank without a mask counts every sample: it sends ones, so that the shapes line up.
    const int masked = comm.sum(mask.size() ? 1 : 0);
    Matrix<T> all_mask;
    if (masked > 0) all_mask = gather(mask.size() ? mask : Matrix<T>(Matrix<T>::Ones(labels.rows(), labels.cols())));
    return ::moe::detail::task_metrics(tasks, all_preds, all_labels, all_mask);
}
}  // namespace detail

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
    return detail::gathered_metrics(model.tasks(), preds, mine.labels, mine.mask, comm);
}

namespace detail {

/// A batch's loss, agreed on by every rank: when it is not finite on some ranks, those return it
/// (fit then stops with its own message) and the others throw numeric_error, all before the step.
template <class T>
T agreed_loss(T total, const Communicator& comm) {
    const int bad = comm.sum(std::isfinite(double(total)) ? 0 : 1);
    if (bad > 0 && std::isfinite(double(total)))
        throw numeric_error(::moe::detail::concat("moe::mpi::fit: the loss of ", bad, " other rank(s) is not finite at this step; "
                                                  "stopped on every rank before the step, the parameters are those of the last good step"));
    return total;
}

/// The output gradients of a rank's batch, each task's scaled by the rank's share of the task's
/// divisor over all ranks (counted samples, or batch sizes): summed over the ranks afterwards, the
/// model's gradients are those of the global batch's loss. Buffers reused.
template <class T>
class TaskShares {
public:
    const std::vector<ConstView<T>>& scale(const MultiTaskLoss<T>& loss, const std::vector<ConstView<T>>& d, const Communicator& comm) {
        mine_.resize(d.size());
        scaled_.resize(d.size());
        views_.resize(d.size());
        for (std::size_t t = 0; t < d.size(); ++t) mine_[t] = double(loss.divisor(t));
        totals_ = mine_;
        comm.sum(totals_.data(), Index(totals_.size()));
        for (std::size_t t = 0; t < d.size(); ++t) {
            const T share = totals_[t] > 0 ? T(mine_[t] / totals_[t]) : T(0);
            auto& s = scaled_[t].resize(d[t].rows(), d[t].cols());
            s = d[t] * share;
            views_[t] = s;
        }
        return views_;
    }

private:
    std::vector<double> mine_, totals_;
    std::vector<Buffer<T>> scaled_;
    std::vector<ConstView<T>> views_;
};

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
        : Base(model, train, valid, batch_size), model_(model), loss_(loss), valid_(valid), samples_(samples), comm_(comm) {}

    /// Every rank steps through the same number of batches: the smallest shard's sample count.
    Index size() const { return samples_; }

    T agree_on_loss(T total) { return agreed_loss(total, comm_); }

    void backward(const std::vector<ConstView<T>>& d) {
        Base::backward(shares_.scale(loss_, d, comm_));
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
    TaskShares<T> shares_;
};

/// The settings distributed training refuses, checked on every rank.
template <class T>
void check_distributed(int has_valid, const MultiTaskLoss<T>& loss, const Communicator& comm) {
    ::moe::detail::require(has_valid == 0 || has_valid == comm.size(), "moe::mpi::fit: ", has_valid, " of ", comm.size(),
                           " ranks have validation data; give it on every rank or on none");
    ::moe::detail::require(loss.weighting() == TaskWeighting::fixed,
                           "moe::mpi::fit: uncertainty weighting is not supported in distributed training yet");
}

/// Every surface of a tower tree among all ranks' training samples.
inline void check_surfaces_trained(const std::vector<Index>& mine, Index surfaces, const Communicator& comm) {
    if (surfaces == 1) return;
    std::vector<long long> seen(std::size_t(surfaces), 0);
    comm.agree([&] {
        for (Index s : mine) {
            ::moe::detail::require(s >= 0 && s < surfaces, "moe::mpi::fit: surface ", s, " is unknown");
            ++seen[std::size_t(s)];
        }
    });
    comm.sum(seen.data(), Index(seen.size()));
    comm.agree([&] {
        for (Index s = 0; s < surfaces; ++s)
            ::moe::detail::require(seen[std::size_t(s)] > 0, "moe::mpi::fit: surface ", s, " has no training samples on any rank");
    });
}

/// fit's per-epoch callback made collective: the user's callback runs on every rank (an error in it
/// on one rank stops all), rank 0 writes the checkpoint (`save`) when one is asked for, and rank
/// 0's decision to go on is every rank's. Progress is printed by rank 0 only.
template <class Save>
void distribute_callback(FitOptions& o, const Communicator& comm, const DistributedOptions& d, Save save) {
    if (comm.rank() != 0) o.progress = Progress::silent;
    if (!o.on_epoch && d.checkpoint.empty()) return;
    const auto user = o.on_epoch;
    o.on_epoch = [&comm, &d, user, save](const EpochReport& r) {
        int go = 1;
        comm.agree([&] {
            if (user) go = user(r) ? 1 : 0;
            if (!d.checkpoint.empty() && comm.rank() == 0) save();
        });
        comm.broadcast(&go, 1, 0);
        return go != 0;
    };
}

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
        detail::check_distributed(has_valid, loss, comm);
        ::moe::detail::check_fit_options(o);
        ::moe::detail::check_fit_loss(model.tasks(), loss);
        mine.check(model.in_features(), model.tasks(), "train", model.surfaces());
        ::moe::detail::require(mine.size() >= 2, "moe::mpi::fit: the training shard has ", mine.size(),
                               " sample; a step needs at least 2 (BatchNorm cannot train on one)");
        if (valid) valid->check(model.in_features(), model.tasks(), "validation", model.surfaces());
    });
    detail::check_surfaces_trained(mine.surfaces, model.surfaces(), comm);
    auto& values = model.params().values();
    comm.broadcast(values.data(), values.size(), 0);
    detail::distribute_callback(o, comm, d, [&] { save(model, d.checkpoint); });
    detail::DistributedSource<M> source(model, loss, mine, valid, o.batch_size, comm.min(mine.size()), comm);
    return ::moe::detail::fit_loop(model, loss, source, o);
}

}  // namespace moe::mpi
