// Data-parallel training on MPI, run on 2 ranks by ctest (mpirun -np 2): 20 steps on two ranks equal
// one process's 20 steps on the global batches; validation metrics equal the single-process ones;
// the checkpoint resumes on one rank; rank 0 decides early stopping; a bad shard or a non-finite loss
// on one rank stops both with that rank's error.
#define CATCH_CONFIG_RUNNER
#include <mpi.h>

#include <cmath>
#include <filesystem>
#include <numeric>
#include <vector>

#include "moe/moe.hpp"
#include "moe/mpi/distributed_feature_fit.hpp"
#include "moe/mpi/distributed_fit.hpp"
#include "moe/testing/gradcheck.hpp"
#include "support/catch.hpp"

using namespace moe;
using Catch::Matchers::Contains;

namespace {

const std::vector<TaskSpec> kTasks = {binary_task("click"), regression_task("time"), binary_task("like")};

MMoESpec spec() {
    MMoESpec s;
    s.input = 6;
    s.experts = 3;
    s.expert_hidden = {8};
    s.expert_dim = 4;
    s.tower_hidden = {4};
    s.tasks = kTasks;
    return s;
}

/// n samples; like is masked to about a third of them (so the ranks count different numbers).
MultiTaskData<double> data(Index n, std::uint64_t seed) {
    MultiTaskData<double> d;
    d.x = testing::random_matrix(6, n, seed);
    d.labels.resize(3, n);
    d.mask = Matrix<double>::Ones(3, n);
    Rng rng(seed + 1);
    for (Index j = 0; j < n; ++j) {
        d.labels(0, j) = d.x(0, j) + d.x(1, j) > 0 ? 1 : 0;
        d.labels(1, j) = std::abs(d.x(2, j));
        d.labels(2, j) = d.x(3, j) > 0 ? 1 : 0;
        d.mask(2, j) = rng.uniform() < 0.35 ? 1 : 0;
    }
    return d;
}

FitOptions options(int epochs, Index batch) {
    FitOptions o;
    o.epochs = epochs;
    o.batch_size = batch;
    o.lr = 1e-2;
    o.seed = 9;
    o.progress = Progress::silent;
    return o;
}

/// The largest difference of a value between this rank and the others (0: every rank holds the same).
double spread(const Vector<double>& v, const mpi::Communicator& comm) {
    Vector<double> sum = v;
    comm.sum(sum.data(), sum.size());
    return (sum - double(comm.size()) * v).cwiseAbs().maxCoeff();
}

}  // namespace

TEST_CASE("mpi::fit: 20 steps on 2 ranks equal one process's steps on the global batches", "[mpi]") {
    mpi::Communicator comm;
    REQUIRE(comm.size() == 2);
    const Index per_rank = 8, steps = 20, n = 2 * per_rank * steps;
    const MultiTaskData<double> all = data(n, 3);
    const MultiTaskData<double> mine = mpi::shard(all, comm);
    // Each rank builds its model from its own seed: fit starts from rank 0's parameters.
    Model<MMoE<double>> model(spec(), std::uint64_t(1 + comm.rank()));
    MultiTaskLoss<double> loss(kTasks);
    const FitOptions o = options(1, per_rank);
    mpi::fit(model, loss, mine, nullptr, o, comm);
    CHECK(spread(model.params().values(), comm) == 0.0);

    // One process: rank 0's initial parameters, the same batches (fit's permutation of a shard's
    // positions, which both ranks share, taken from both shards), one Adam step per global batch.
    Model<MMoE<double>> ref(spec(), 1);
    MultiTaskLoss<double> ref_loss(kTasks);
    AdamOptions ao;
    ao.lr = o.lr;
    Adam<double> adam(ao);
    std::vector<Index> order(std::size_t(n / 2));
    std::iota(order.begin(), order.end(), Index(0));
    Rng rng(o.seed);
    moe::shuffle(order.begin(), order.end(), rng);
    ref.train();
    for (Index b = 0; b < steps; ++b) {
        Matrix<double> x(6, 2 * per_rank), y(3, 2 * per_rank), m(3, 2 * per_rank);
        for (Index r = 0; r < 2; ++r)
            for (Index k = 0; k < per_rank; ++k) {
                const Index global = 2 * order[std::size_t(b * per_rank + k)] + r;  // shard r's sample i is row 2 i + r
                x.col(r * per_rank + k) = all.x.col(global);
                y.col(r * per_rank + k) = all.labels.col(global);
                m.col(r * per_rank + k) = all.mask.col(global);
            }
        ref.zero_grad();
        ref_loss.forward(ref.forward(x), y, m);
        ref.backward(ref_loss.backward());
        adam.step(ref.params());
    }
    // Not bitwise: a rank sums its half of the batch, then the ranks' sums are added (another order
    // of the same additions); in double the parameters agree to rounding.
    const double diff = (model.params().values() - ref.params().values()).cwiseAbs().maxCoeff();
    INFO("largest difference to one process " << diff);
    CHECK(diff < 1e-12);
}

TEST_CASE("mpi::evaluate: metrics over all ranks' shards equal the whole data set's", "[mpi]") {
    mpi::Communicator comm;
    const MultiTaskData<double> valid = data(301, 5);  // shards of 151 and 150
    Model<MMoE<double>> model(spec(), 4);
    const auto mine = mpi::evaluate(model, mpi::shard(valid, comm), comm);
    const auto whole = evaluate(model, valid);
    REQUIRE(mine.size() == whole.size());
    for (std::size_t t = 0; t < whole.size(); ++t) {
        INFO(whole[t].task);
        CHECK(mine[t].count == whole[t].count);
        if (whole[t].auc) CHECK(std::abs(*mine[t].auc - *whole[t].auc) < 1e-12);
        if (std::isfinite(whole[t].logloss)) CHECK(std::abs(mine[t].logloss - whole[t].logloss) < 1e-12);
        if (std::isfinite(whole[t].rmse)) CHECK(std::abs(mine[t].rmse - whole[t].rmse) < 1e-12);
    }
}

TEST_CASE("mpi::fit: rank 0 writes the checkpoint, rank 0 decides early stopping, one rank resumes", "[mpi]") {
    mpi::Communicator comm;
    const std::string path = (std::filesystem::temp_directory_path() / "moe_test_mpi_checkpoint.safetensors").string();
    const MultiTaskData<double> all = data(200, 7), valid = data(60, 8);
    Model<MMoE<double>> model(spec(), 2);
    MultiTaskLoss<double> loss(kTasks);
    FitOptions o = options(5, 10);
    // Rank 0 stops after epoch 2; rank 1's callback would go on.
    o.on_epoch = [&](const EpochReport& r) { return comm.rank() != 0 || r.epoch < 2; };
    mpi::DistributedOptions d;
    d.checkpoint = path;
    const FitHistory h = mpi::fit(model, loss, mpi::shard(all, comm), nullptr, o, comm, d);
    CHECK(h.epochs.size() == 2);
    CHECK(h.stopped_by_callback);
    comm.agree([] {});
    REQUIRE(std::filesystem::exists(path));
    Model<MMoE<double>> saved = load<MMoE<double>>(path);
    CHECK(saved.params().values() == model.params().values());

    // Resume on one rank: rank 0 alone (a communicator of its own) continues from the checkpoint;
    // on one rank the step is exactly fit's, so the bits equal a plain fit's from the same file.
    MPI_Comm alone;
    MPI_Comm_split(MPI_COMM_WORLD, comm.rank(), 0, &alone);
    if (comm.rank() == 0) {
        mpi::Communicator one(alone);
        Model<MMoE<double>> resumed = load<MMoE<double>>(path), plain = load<MMoE<double>>(path);
        MultiTaskLoss<double> l1(kTasks), l2(kTasks);
        mpi::fit(resumed, l1, all, &valid, options(1, 20), one);
        fit(plain, l2, all, &valid, options(1, 20));
        CHECK(resumed.params().values() == plain.params().values());
        std::filesystem::remove(path);
    }
    MPI_Comm_free(&alone);
}

TEST_CASE("mpi::fit: a bad shard or a non-finite loss on one rank stops every rank with its error", "[mpi][errors]") {
    mpi::Communicator comm;
    MultiTaskData<double> mine = mpi::shard(data(64, 11), comm);
    Model<MMoE<double>> model(spec(), 3);
    const Vector<double> start = model.params().values();
    MultiTaskLoss<double> loss(kTasks);
    if (comm.rank() == 1) mine.labels(0, 5) = 3.0;  // a binary label out of range, on rank 1 only
    CHECK_THROWS_AS(mpi::fit(model, loss, mine, nullptr, options(1, 8), comm), config_error);
    CHECK_THROWS_WITH(mpi::fit(model, loss, mine, nullptr, options(1, 8), comm),
                      Contains("rank 1: ") && Contains("label of task 'click' at sample 5 is 3"));
    CHECK(model.params().values() == start);  // refused before any step
    mine.labels(0, 5) = 1.0;
    if (comm.rank() == 1) mine.x.col(2).setConstant(1e300);  // finite, but the loss overflows
    CHECK_THROWS_AS(mpi::fit(model, loss, mine, nullptr, options(1, 8), comm), numeric_error);
    CHECK(model.params().values().allFinite());           // stopped before the non-finite step,
    CHECK(spread(model.params().values(), comm) == 0.0);  // on every rank at the same step

    MultiTaskLoss<double> uncertainty(kTasks, {}, TaskWeighting::uncertainty);
    CHECK_THROWS_WITH(mpi::fit(model, uncertainty, mine, nullptr, options(1, 8), comm), Contains("uncertainty weighting is not supported"));
}

TEST_CASE("mpi::fit of a FeatureModel: the tables' row-sparse gradients summed over the ranks; 20 steps equal one process's",
          "[mpi][features]") {
    mpi::Communicator comm;
    const Index per_rank = 8, steps = 20, n = 2 * per_rank * steps;
    // An item table read by item_id and by a history pooled by attention against it, a user table.
    FeatureSpec f;
    f.dense = 2;
    f.add_table("items", 30, 3).add_table("users", 12, 2);
    f.add_feature("item_id", "items").add_attention_feature("history", "items", "item_id", 4, {4}).add_feature("user_id", "users");
    FeatureData<double> all;
    Rng rng(21);
    all.features.dense = testing::random_matrix(2, n, 22);
    all.labels.resize(3, n);
    all.mask = Matrix<double>::Ones(3, n);
    for (Index j = 0; j < n; ++j) {
        const auto item = std::int64_t(rng.below(30));
        all.features.sparse["item_id"].ids.push_back(item);
        for (auto len = rng.below(5); len > 0; --len) all.features.sparse["history"].ids.push_back(std::int64_t(rng.below(30)));
        all.features.sparse["user_id"].ids.push_back(std::int64_t(rng.below(12)));
        for (const char* name : {"item_id", "history", "user_id"})
            all.features.sparse[name].offsets.push_back(std::int64_t(all.features.sparse[name].ids.size()));
        all.labels(0, j) = item % 3 == 0 ? 1 : 0;
        all.labels(1, j) = all.features.dense(0, j);
        all.labels(2, j) = rng.uniform() < 0.5 ? 1 : 0;
        all.mask(2, j) = rng.uniform() < 0.4 ? 1 : 0;
    }
    MMoESpec s = spec();
    s.input = 0;
    FeatureModel<MMoE<double>> model(f, s, std::uint64_t(5 + comm.rank()));  // fit starts from rank 0's values
    MultiTaskLoss<double> loss(kTasks);
    SparseAdamOptions so;
    so.lr = 0.02;
    TableOptimizer<double> tables(model.input(), so);
    const FitOptions o = options(1, per_rank);
    mpi::fit(model, tables, loss, mpi::shard(all, comm), nullptr, o, comm);
    CHECK(spread(model.params().values(), comm) == 0.0);
    CHECK(spread(model.input().attention_params().values(), comm) == 0.0);
    for (Index t = 0; t < model.input().tables(); ++t) {
        const Matrix<double>& w = model.input().table(t);
        CHECK(spread(Eigen::Map<const Vector<double>>(w.data(), w.size()), comm) == 0.0);
    }

    // One process on the same global batches: Adam on the net and the attention, SparseAdam on the tables.
    FeatureModel<MMoE<double>> ref(f, s, 5);
    MultiTaskLoss<double> ref_loss(kTasks);
    AdamOptions ao;
    ao.lr = o.lr;
    Adam<double> adam(ao), attention_adam(ao);
    TableOptimizer<double> ref_tables(ref.input(), so);
    std::vector<Index> order(std::size_t(n / 2));
    std::iota(order.begin(), order.end(), Index(0));
    Rng shuffle_rng(o.seed);
    moe::shuffle(order.begin(), order.end(), shuffle_rng);
    ref.train();
    FeatureBatch<double> batch;
    for (Index b = 0; b < steps; ++b) {
        std::vector<Index> samples;
        Matrix<double> y(3, 2 * per_rank), m(3, 2 * per_rank);
        for (Index r = 0; r < 2; ++r)
            for (Index k = 0; k < per_rank; ++k) samples.push_back(2 * order[std::size_t(b * per_rank + k)] + r);
        gather_samples(all.features, samples.data(), Index(samples.size()), batch);
        for (std::size_t k = 0; k < samples.size(); ++k) y.col(Index(k)) = all.labels.col(samples[k]), m.col(Index(k)) = all.mask.col(samples[k]);
        ref.zero_grad();
        ref_loss.forward(ref.forward(batch), y, m);
        ref.backward(ref_loss.backward());
        adam.step(ref.params());
        attention_adam.step(ref.input().attention_params());
        ref_tables.step(ref.input());
    }
    double diff = (model.params().values() - ref.params().values()).cwiseAbs().maxCoeff();
    diff = std::max(diff, (model.input().attention_params().values() - ref.input().attention_params().values()).cwiseAbs().maxCoeff());
    for (Index t = 0; t < model.input().tables(); ++t)
        diff = std::max(diff, (model.input().table(t) - ref.input().table(t)).cwiseAbs().maxCoeff());
    INFO("largest difference to one process " << diff);
    CHECK(diff < 1e-12);
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    // Every rank runs every test (they are collective) and reports; the program fails when any
    // rank's tests fail.
    const int failures = Catch::Session().run(argc, argv);
    int worst = failures;
    MPI_Allreduce(&failures, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return worst == 0 ? 0 : 1;
}
