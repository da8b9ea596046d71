// Metrics, the fit loop, ranking and gate inspection.
#include <sstream>

#include "support/catch.hpp"
#include "support/gradcheck.hpp"

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
    train.x(0, 70) = std::numeric_limits<double>::infinity();
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
