// Metrics, the fit loop, ranking and gate inspection.
#include <cstring>
#include <sstream>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "support/catch.hpp"
#include "support/forced_threads.hpp"
#include "support/gradcheck.hpp"
#include "support/specs.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_training {

using namespace moe;
using Catch::Matchers::Contains;

namespace {
Matrix<double> row(std::initializer_list<double> v) {
    Matrix<double> m(1, static_cast<Index>(v.size()));
    Index i = 0;
    for (double d : v) m(0, i++) = d;
    return m;
}

MMoESpec spec2() {
    MMoESpec s;
    s.input = 4;
    s.experts = 3;
    s.expert_hidden = {8};
    s.expert_dim = 4;
    s.tower_hidden = {4};
    s.tasks = {binary_task("click"), regression_task("watch")};
    return s;
}

/// click = x0 + x1 > 0; watch = x2 where clicked (masked otherwise).
MultiTaskData<double> toy(Index n, std::uint64_t seed) {
    MultiTaskData<double> d;
    d.x = moe::testing::random_matrix(4, n, seed);
    d.labels.resize(2, n);
    d.mask = Matrix<double>::Ones(2, n);
    for (Index j = 0; j < n; ++j) {
        d.labels(0, j) = d.x(0, j) + d.x(1, j) > 0;
        d.labels(1, j) = d.x(2, j);
        d.mask(1, j) = d.labels(0, j);
    }
    return d;
}
}  // namespace

TEST_CASE("AUC: exact, ties count one half, undefined with one class", "[metrics]") {
    const Matrix<double> y = row({0, 0, 1, 1});
    CHECK(*auc<double>(row({0.1, 0.4, 0.35, 0.8}), y) == Approx(0.75));
    CHECK(*auc<double>(row({0.5, 0.5, 0.5, 0.5}), y) == Approx(0.5));
    CHECK(*auc<double>(row({0.1, 0.5, 0.5, 0.9}), y) == Approx(0.875));  // one tied pair of four
    CHECK_FALSE(auc<double>(row({0.1, 0.2}), row({1, 1})).has_value());
    CHECK(*auc<double>(row({0.9, 0.1, 0.35, 0.8}), y, row({0, 1, 1, 1})) == Approx(1.0));  // masked sample ignored
    CHECK(rmse<double>(row({1, 2}), row({1, 4})) == Approx(std::sqrt(2.0)));
    CHECK(accuracy<double>(row({0.7, 0.2}), row({1, 1})) == Approx(0.5));
    CHECK(logloss<double>(row({0.5}), row({1})) == Approx(std::log(2.0)));
    CHECK_THROWS_AS(auc<double>(row({0.1, 0.2}), row({1})), shape_error);
}

TEST_CASE("fit: learns, reports per epoch, stops on the callback", "[train]") {
    Model<MMoE<double>> model(spec2(), 3);
    MultiTaskLoss<double> loss(model.tasks());
    const auto train = toy(512, 1), valid = toy(256, 2);
    FitOptions o;
    o.epochs = 15;
    o.batch_size = 64;
    o.lr = 1e-2;
    o.cosine_lr = true;
    o.clip_norm = 5;
    std::ostringstream log;
    o.out = &log;
    o.progress = Progress::lines;
    o.on_epoch = [](const EpochReport& r) { return r.epoch < 12; };
    const auto h = fit(model, loss, train, &valid, o);
    REQUIRE(h.epochs.size() == 12);
    CHECK(h.stopped_by_callback);
    CHECK(h.epochs.back().train_loss < h.epochs.front().train_loss);
    CHECK(*h.epochs.back().validation[0].auc > 0.95);
    CHECK(h.epochs.back().validation[1].count < 256);  // watch counted only where clicked
    CHECK_THAT(log.str(), Contains("epoch 1/15") && Contains("click auc"));
}

TEST_CASE("fit: a non-finite loss stops with the epoch, batch and task, parameters kept", "[train][errors]") {
    Model<MMoE<double>> model(spec2(), 3);
    MultiTaskLoss<double> loss(model.tasks());
    auto train = toy(128, 1);
    // Data with an infinite feature is refused before training (next test); a weight can still make
    // the loss overflow.
    model.params().value("towers.1.0.weight").setConstant(1e300);
    FitOptions o;
    o.epochs = 2;
    o.batch_size = 128;
    o.progress = Progress::silent;
    const Vector<double> before = model.params().values();
    CHECK_THROWS_MATCHES(fit(model, loss, train, nullptr, o), numeric_error,
                         Catch::Matchers::Predicate<numeric_error>([](const numeric_error& e) {
                             const std::string m = e.what();
                             return m.find("epoch 1") != std::string::npos && m.find("batch 1") != std::string::npos &&
                                    m.find("task '") != std::string::npos;
                         }));
    CHECK(model.params().values() == before);
}

TEST_CASE("fit and evaluate: bad data and settings are clear errors", "[train][errors]") {
    Model<MMoE<double>> model(spec2(), 3);
    MultiTaskLoss<double> loss(model.tasks());
    auto train = toy(64, 1);
    FitOptions o;
    o.progress = Progress::silent;
    o.batch_size = 1;
    CHECK_THROWS_WITH(fit(model, loss, train, nullptr, o), Contains("batch_size must be at least 2, got 1"));
    o.batch_size = 16;
    train.labels(0, 5) = 3;
    CHECK_THROWS_WITH(fit(model, loss, train, nullptr, o), Contains("task 'click' at sample 5 is 3"));
    train = toy(64, 1);
    train.mask.resize(1, 64);
    CHECK_THROWS_WITH(evaluate(model, train), Contains("mask is 1 x 64, expected 2 x 64"));
}

TEST_CASE("fit: everything is checked before the first step", "[train][errors]") {
    Model<MMoE<double>> model(spec2(), 3);
    MultiTaskLoss<double> loss(model.tasks());
    FitOptions o;
    o.progress = Progress::silent;
    o.epochs = 1;
    o.batch_size = 16;
    const Vector<double> before = model.params().values();
    auto untouched = [&] { CHECK(model.params().values() == before); };

    SECTION("a loss built for other tasks: names, kinds or order") {
        MultiTaskLoss<double> renamed({binary_task("clicked"), regression_task("watch")});
        CHECK_THROWS_WITH(fit(model, renamed, toy(64, 1), nullptr, o),
                          Contains("the loss was built for the tasks [clicked (binary), watch (regression)], the model has "
                                   "[click (binary), watch (regression)]"));
        MultiTaskLoss<double> swapped({regression_task("watch"), binary_task("click")});
        CHECK_THROWS_AS(fit(model, swapped, toy(64, 1), nullptr, o), config_error);
        MultiTaskLoss<double> kinds({binary_task("click"), binary_task("watch")});
        CHECK_THROWS_AS(fit(model, kinds, toy(64, 1), nullptr, o), config_error);
    }
    SECTION("NaN or negative mask values, named by sample") {
        auto train = toy(64, 1);
        train.mask(1, 37) = -1;
        CHECK_THROWS_WITH(fit(model, loss, train, nullptr, o), Contains("mask of task 'watch' at sample 37 is -1"));
        train.mask(1, 37) = std::nan("");
        CHECK_THROWS_WITH(fit(model, loss, train, nullptr, o), Contains("mask of task 'watch' at sample 37 is nan"));
    }
    SECTION("non-finite features, in training and in validation data (the AUC once hung on them)") {
        auto train = toy(64, 1), valid = toy(32, 2);
        valid.x(2, 9) = std::nan("");
        CHECK_THROWS_WITH(fit(model, loss, train, &valid, o),
                          Contains("MultiTaskData(validation): feature 2 of sample 9 is nan"));
        train.x(0, 3) = std::numeric_limits<double>::infinity();
        CHECK_THROWS_WITH(fit(model, loss, train, nullptr, o), Contains("MultiTaskData(train): feature 0 of sample 3 is inf"));
    }
    SECTION("min_lr, weight_decay, clip_norm") {
        for (double bad : {-1e-4, std::nan(""), 1.0}) {
            o.min_lr = bad;
            CHECK_THROWS_WITH(fit(model, loss, toy(64, 1), nullptr, o), Contains("min_lr must be in [0, lr = 0.001]"));
        }
        o.min_lr = 0;
        o.weight_decay = std::numeric_limits<double>::infinity();
        CHECK_THROWS_WITH(fit(model, loss, toy(64, 1), nullptr, o), Contains("weight_decay must be finite"));
        o.weight_decay = 0;
        o.clip_norm = std::nan("");
        CHECK_THROWS_WITH(fit(model, loss, toy(64, 1), nullptr, o), Contains("clip_norm must be finite"));
    }
    SECTION("a data set of one sample trains nothing: an error, not a loss of 0") {
        CHECK_THROWS_WITH(fit(model, loss, toy(1, 1), nullptr, o), Contains("the training set has 1 sample"));
    }
    untouched();
}

TEST_CASE("fit: the caller's stream keeps its format", "[train]") {
    Model<MMoE<double>> model(spec2(), 3);
    MultiTaskLoss<double> loss(model.tasks());
    FitOptions o;
    o.epochs = 1;
    o.batch_size = 32;
    o.progress = Progress::lines;
    std::ostringstream log;
    o.out = &log;
    log << 1.25 << " ";
    fit(model, loss, toy(64, 1), nullptr, o);
    log << 1.9375;
    CHECK_THAT(log.str(), Catch::Matchers::StartsWith("1.25 ") && Catch::Matchers::EndsWith("1.9375"));
}

TEST_CASE("Metrics with NaN predictions: NaN out, never a hang or a made-up number", "[metrics][errors]") {
    const double nan = std::nan("");
    const Matrix<double> y = row({0, 1, 0, 1, 1});
    CHECK(std::isnan(*auc<double>(row({0.1, nan, 0.3, 0.9, nan}), y)));
    CHECK(*auc<double>(row({0.1, nan, 0.3, 0.9, 0.8}), y, row({1, 0, 1, 1, 1})) == Approx(1.0));  // masked NaN
    CHECK_FALSE(auc<double>(row({nan, nan}), row({1, 1})).has_value());  // one class: still undefined
    CHECK(std::isnan(logloss<double>(row({0.5, nan}), row({1, 0}))));
    CHECK(std::isnan(accuracy<double>(row({nan, 0.2}), row({0, 0}))));  // NaN is not "class 0"
    Matrix<double> probs(3, 2);
    probs << nan, 0.2, nan, 0.3, nan, 0.5;
    CHECK(std::isnan(multiclass_logloss<double>(probs, row({0, 2}))));
    CHECK(std::isnan(accuracy<double>(probs, row({0, 2}))));
    probs.col(0) << 0.7, 0.2, 0.1;
    CHECK(multiclass_logloss<double>(probs, row({0, 2})) == Approx(-(std::log(0.7) + std::log(0.5)) / 2));
    CHECK(*auc<double>(row({-std::numeric_limits<double>::infinity(), 0.2}), row({0, 1})) == Approx(1.0));  // inf ranks
}

TEST_CASE("rank_candidates: a NaN score ranks last and the finite ones stay in order", "[serve]") {
    Model<MMoE<double>> model(spec2(), 3);
    Matrix<double> c = moe::testing::random_matrix(4, 50, 5);
    c(1, 7) = std::nan("");
    c(3, 30) = std::nan("");
    const auto r = rank_candidates(model, c, {{"click", 1.0}});
    REQUIRE(r.order.size() == 50);
    CHECK(r.order[48] == 7);
    CHECK(r.order[49] == 30);
    for (std::size_t i = 1; i < 48; ++i) CHECK(r.scores[std::size_t(r.order[i - 1])] >= r.scores[std::size_t(r.order[i])]);
    // The serving overload reuses the caller's workspace and result.
    InferenceWorkspace<double> ws;
    Ranking<double> again;
    rank_candidates(model, c, {{"click", 1.0}}, ws, again);
    CHECK(again.order == r.order);
    CHECK(again.task_weights == std::vector<double>{1.0, 0.0});
}

TEST_CASE("rank_candidates: weighted scores, best first, negative weights, unknown tasks refused", "[serve]") {
    Model<MMoE<double>> model(spec2(), 3);
    model.eval();
    const Matrix<double> c = moe::testing::random_matrix(4, 300, 5);
    const auto r = rank_candidates(model, c, {{"click", 1.0}, {"watch", -0.5}});
    REQUIRE(r.order.size() == 300);
    for (std::size_t i = 1; i < r.order.size(); ++i)
        CHECK(r.scores[std::size_t(r.order[i - 1])] >= r.scores[std::size_t(r.order[i])]);
    const Index best = r.order[0];
    CHECK(r.scores[std::size_t(best)] == Approx(r.predictions[0](0, best) - 0.5 * r.predictions[1](0, best)));
    CHECK_THROWS_WITH(rank_candidates(model, c, {{"like", 1.0}}),
                      Contains("unknown task 'like'") && Contains("click, watch"));
}

TEST_CASE("inspect_gates: mean weights, entropy, collapse warning", "[models]") {
    Model<MMoE<double>> model(spec2(), 3);
    const Matrix<double> x = moe::testing::random_matrix(4, 200, 6);
    auto r = inspect_gates(model, x);
    REQUIRE(r.mean_weight.rows() == 2);
    CHECK((r.mean_weight.rowwise().sum().array() - 1).abs().maxCoeff() < 1e-12);
    CHECK(r.entropy.maxCoeff() <= std::log(3.0) + 1e-12);
    CHECK(r.warnings.empty());
    // Force the click gate onto expert 1.
    model.params().value("gates.0.bias")(1, 0) = 50;
    r = inspect_gates(model, x);
    REQUIRE(r.warnings.size() >= 1);
    CHECK_THAT(r.warnings[0], Contains("gate 'click' has collapsed onto expert 1"));
    CHECK_THAT(r.table(), Contains("expert2"));
}

#ifdef _OPENMP
namespace {
/// What a training run leaves: its parameters, its loss and BatchNorm's running statistics.
struct RunResult {
    Vector<float> params;
    std::vector<float> running_stats;  // every BatchNorm's running mean and variance, in model order
    double train_loss = 0;
};

using moe::testing::ForcedThreads;

/// Threads a parallel region really gets (OMP_THREAD_LIMIT or OMP_DYNAMIC may give fewer).
int threads_granted(int threads) {
    int granted = 1;
#pragma omp parallel num_threads(threads)
    {
#pragma omp single
        granted = omp_get_num_threads();
    }
    return granted;
}

/// 20 steps of fit (batch 1100: uneven shares on 3 threads, long enough to split the depth of the
/// weight-gradient products) on `threads` threads, every loop of more than one chunk threaded.
template <class M, class Spec>
RunResult train_on_threads(const Spec& spec, int threads) {
    Model<M> model(spec, 7);
    MultiTaskLoss<float> loss(model.tasks());
    const MultiTaskData<double> d = toy(22000, 5);
    MultiTaskData<float> data{d.x.cast<float>(), d.labels.cast<float>(), d.mask.cast<float>(), {}, {}};
    FitOptions o;
    o.epochs = 1;
    o.batch_size = 1100;
    o.lr = 1e-2;
    o.seed = 3;
    o.progress = Progress::silent;
    FitHistory h;
    {
        const ForcedThreads forced(threads);
        h = fit(model, loss, data, nullptr, o);
    }
    RunResult r{model.params().values(), {}, h.epochs.back().train_loss};
    if constexpr (detail::has_batchnorm<M>::value)
        model.for_each_batchnorm("", [&](const std::string&, BatchNorm1d<float>& bn) {
            r.running_stats.insert(r.running_stats.end(), bn.running_mean().data(),
                                   bn.running_mean().data() + bn.running_mean().size());
            r.running_stats.insert(r.running_stats.end(), bn.running_var().data(),
                                   bn.running_var().data() + bn.running_var().size());
        });
    return r;
}

template <class M, class Spec>
void check_same_bits_on_1_2_3_threads(const Spec& spec) {
    const RunResult one = train_on_threads<M>(spec, 1);
    CHECK(one.running_stats.empty() == !spec.batchnorm);
    for (int threads : {2, 3}) {
        INFO(threads << " threads");
        if (threads_granted(threads) != threads) {
            WARN("skipped: OpenMP grants fewer than " << threads << " threads here (OMP_THREAD_LIMIT?)");
            continue;
        }
        const RunResult many = train_on_threads<M>(spec, threads);
        REQUIRE(many.params.size() == one.params.size());
        CHECK(std::memcmp(many.params.data(), one.params.data(), sizeof(float) * std::size_t(one.params.size())) == 0);
        REQUIRE(many.running_stats.size() == one.running_stats.size());
        CHECK(std::memcmp(many.running_stats.data(), one.running_stats.data(),
                          sizeof(float) * one.running_stats.size()) == 0);
        CHECK(std::memcmp(&many.train_loss, &one.train_loss, sizeof(double)) == 0);
    }
}

template <class Spec>
Spec with_batchnorm_and_dropout(Spec s) {
    s.input = 4;
    s.tasks = {binary_task("click"), regression_task("watch")};
    s.batchnorm = true;
    s.tower_dropout = 0.1;
    return s;
}
}  // namespace

TEST_CASE("Training gives the same bits on 1, 2 and 3 threads", "[train][threads]") {
    SECTION("MMoE") { check_same_bits_on_1_2_3_threads<MMoE<float>>(with_batchnorm_and_dropout(spec2())); }
    SECTION("MMoE without BatchNorm (its experts run in column blocks)") {
        auto s = with_batchnorm_and_dropout(spec2());
        s.batchnorm = false;
        check_same_bits_on_1_2_3_threads<MMoE<float>>(s);
    }
    SECTION("PLE") {
        check_same_bits_on_1_2_3_threads<PLE<float>>(with_batchnorm_and_dropout(moe::testing::small_ple()));
    }
    SECTION("SparseMMoE (dropout only: its experts refuse BatchNorm, an expert may get one sample)") {
        auto s = with_batchnorm_and_dropout(moe::testing::small_sparse_mmoe(2));
        s.batchnorm = false;
        check_same_bits_on_1_2_3_threads<SparseMMoE<float>>(s);
    }
}
#else
TEST_CASE("Training gives the same bits on 1, 2 and 3 threads", "[train][threads]") {
    WARN("skipped: built without OpenMP, nothing runs on threads");
}
#endif

}  // namespace test_training
