// Training and evaluating a FeatureModel on a FeatureData: gathering samples into batches, the
// data set's checks, fit with SparseAdam and with a caller's Adagrad table optimizer (its lr and
// state), evaluate / predict_all against predict, and errors that change nothing.
#include <cmath>
#include <numeric>
#include <utility>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "support/catch.hpp"
#include "support/specs.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_feature_training {

using namespace moe;
using Catch::Matchers::Contains;

namespace {

/// n samples: 2 dense noise features, an item id (40 items) and a history of 0 to 3 items (mean,
/// shared table); click is a fixed random function of the item, so only the ID tells it.
struct ItemData {
    FeatureSpec spec;
    FeatureData<float> train, valid;
};

ItemData item_data(Index n_train, Index n_valid, std::uint64_t seed) {
    ItemData d;
    d.spec.dense = 2;
    d.spec.add_table("items", 40, 4).add_feature("item_id", "items").add_feature("history", "items", PoolingMode::mean, 3);
    Rng rng(seed);
    std::vector<float> label_of(40);
    for (auto& l : label_of) l = rng.uniform() < 0.5 ? 0.0f : 1.0f;
    auto make = [&](Index n, FeatureData<float>& out) {
        out.features.dense.resize(2, n);
        out.labels.resize(1, n);
        Bags<float>& item = out.features.sparse["item_id"];
        Bags<float>& history = out.features.sparse["history"];
        for (Index i = 0; i < n; ++i) {
            out.features.dense(0, i) = float(rng.normal());
            out.features.dense(1, i) = float(rng.normal());
            const auto id = std::int64_t(rng.uniform() * 40) % 40;
            item.ids.push_back(id);
            item.offsets.push_back(std::int64_t(item.ids.size()));
            for (Index h = std::int64_t(rng.uniform() * 4) % 4; h > 0; --h) history.ids.push_back(std::int64_t(rng.uniform() * 40) % 40);
            history.offsets.push_back(std::int64_t(history.ids.size()));
            out.labels(0, i) = label_of[std::size_t(id)];
        }
    };
    make(n_train, d.train);
    make(n_valid, d.valid);
    return d;
}

MMoESpec click_mmoe() {
    MMoESpec m = moe::testing::small_mmoe({binary_task("click")});
    m.input = 0;
    return m;
}

FitOptions quiet(int epochs, double lr) {
    FitOptions o;
    o.epochs = epochs;
    o.batch_size = 32;
    o.lr = lr;
    o.seed = 3;
    o.progress = Progress::silent;
    return o;
}

}  // namespace

TEST_CASE("gather_samples: the chosen samples' dense columns, bags and weights, in order; storage reused", "[features][training]") {
    FeatureBatch<double> all;
    all.dense = (Matrix<double>(1, 4) << 10, 11, 12, 13).finished();
    all.sparse["a"] = Bags<double>::from_lengths({1, 2, 3, 4, 5}, {1, 0, 3, 1}, {0.1, 0.2, 0.3, 0.4, 0.5});
    all.sparse["b"] = Bags<double>::from_lengths({7, 8, 9, 6}, {1, 1, 1, 1});
    const Index picks[] = {3, 1, 2, 3};
    FeatureBatch<double> out;
    gather_samples(all, picks, 4, out);
    CHECK(out.dense == (Matrix<double>(1, 4) << 13, 11, 12, 13).finished());
    CHECK(out.sparse.at("a").ids == std::vector<std::int64_t>{5, 2, 3, 4, 5});
    CHECK(out.sparse.at("a").offsets == std::vector<std::int64_t>{0, 1, 1, 4, 5});
    CHECK(out.sparse.at("a").weights == std::vector<double>{0.5, 0.2, 0.3, 0.4, 0.5});
    CHECK(out.sparse.at("b").ids == std::vector<std::int64_t>{6, 8, 9, 6});
    CHECK(out.sparse.at("b").weights.empty());
    const std::int64_t* storage = out.sparse.at("a").ids.data();
    const Index fewer[] = {0, 2};
    gather_samples(all, fewer, 2, out);  // fewer ids: the same buffers
    CHECK(out.sparse.at("a").ids.data() == storage);
    CHECK(out.sparse.at("a").ids == std::vector<std::int64_t>{1, 2, 3, 4});
    CHECK(out.dense.cols() == 2);
    const Index outside[] = {1, 4};
    CHECK_THROWS_WITH(gather_samples(all, outside, 2, out), Contains("sample 4 (entry 1) is outside the 4 samples"));
}

TEST_CASE("FeatureData::check: shapes, ids, dense values and labels, naming the data set and the feature", "[features][training][errors]") {
    ItemData d = item_data(20, 4, 1);
    FeatureInput<float> input(d.spec);
    const std::vector<TaskSpec> tasks{binary_task("click")};
    d.train.check(input, tasks, "train");
    {
        FeatureData<float> bad = d.train;
        bad.features.sparse["item_id"].ids[3] = 40;
        CHECK_THROWS_WITH(bad.check(input, tasks, "train"), Contains("moe::FeatureData(train)") && Contains("feature 'item_id'") &&
                                                                Contains("id 40 at position 3"));
    }
    {
        FeatureData<float> bad = d.train;
        bad.features.dense(1, 5) = std::nanf("");
        CHECK_THROWS_WITH(bad.check(input, tasks, "valid"), Contains("(valid): dense feature 1 of sample 5 is nan"));
    }
    {
        FeatureData<float> bad = d.train;
        bad.labels(0, 7) = 2;
        CHECK_THROWS_WITH(bad.check(input, tasks, "train"), Contains("label of task 'click' at sample 7 is 2"));
    }
    {
        FeatureData<float> bad = d.train;
        bad.labels.resize(1, 19);
        CHECK_THROWS_AS(bad.check(input, tasks, "train"), shape_error);
        bad.labels.resize(2, 20);
        CHECK_THROWS_AS(bad.check(input, tasks, "train"), shape_error);
    }
    {
        FeatureData<float> bad = d.train;
        bad.mask = Matrix<float>::Ones(1, 20);
        bad.mask(0, 2) = -1;
        CHECK_THROWS_WITH(bad.check(input, tasks, "train"), Contains("mask of task 'click' at sample 2 is -1"));
    }
    {
        FeatureData<float> bad = d.train;
        bad.features.sparse.erase("history");
        CHECK_THROWS_WITH(bad.check(input, tasks, "train"), Contains("(train)") && Contains("no feature 'history'"));
    }
}

TEST_CASE("fit: a FeatureModel learns from its ID features; evaluate and predict_all agree with predict", "[features][training]") {
    const ItemData d = item_data(1600, 400, 5);
    FeatureModel<MMoE<float>> model(d.spec, click_mmoe(), 7);
    MultiTaskLoss<float> loss(model.tasks());
    const auto before = evaluate(model, d.valid);
    const FitHistory h = fit(model, loss, d.train, &d.valid, quiet(6, 0.02));
    REQUIRE(h.epochs.size() == 6);
    CHECK(h.epochs.back().train_loss < h.epochs.front().train_loss);
    const auto after = evaluate(model, d.valid);
    REQUIRE(after.size() == 1);
    CHECK(*after[0].auc > 0.95);
    CHECK(*after[0].auc > *before[0].auc + 0.2);
    CHECK(after[0].count == 400);
    CHECK(*h.epochs.back().validation[0].auc == Approx(*after[0].auc));

    // predict_all in batches equals one predict over everything.
    FeatureWorkspace<float> ws;
    const Matrix<float> whole = model.predict(d.valid.features, ws)[0];
    const auto batched = predict_all(model, d.valid.features, 64);
    CHECK((batched[0] - whole).cwiseAbs().maxCoeff() < 1e-6f);
    CHECK_THROWS_WITH(predict_all(model, d.valid.features, 0), Contains("batch_size must be positive"));
}

TEST_CASE("fit: a caller's Adagrad table optimizer keeps its state and lr; the cosine schedule scales it", "[features][training]") {
    const ItemData d = item_data(256, 64, 8);
    FeatureModel<MMoE<float>> model(d.spec, click_mmoe(), 7);
    MultiTaskLoss<float> loss(model.tasks());
    SparseAdagradOptions ao;
    ao.lr = 0.1;
    ao.rowwise = true;
    TableOptimizer<float, SparseAdagrad<float>> tables(model.input(), ao);
    FitOptions o = quiet(2, 0.01);
    o.cosine_lr = true;
    std::vector<double> table_lr;  // the tables' lr in each epoch's last step
    o.on_epoch = [&](const EpochReport&) {
        table_lr.push_back(tables.table_optimizer(0).options().lr);
        return true;
    };
    const Matrix<float> table_before = model.input().table(0);
    fit(model, tables, loss, d.train, nullptr, o);
    // Cosine over 2 epochs from lr to 0: factor 1 in epoch 1, (1 + cos(pi / 2)) / 2 = 0.5 in epoch 2.
    REQUIRE(table_lr.size() == 2);
    CHECK(table_lr[0] == Approx(0.1));
    CHECK(table_lr[1] == Approx(0.05));
    CHECK(tables.table_optimizer(0).steps() == 16);  // 256 / 32 batches x 2 epochs
    CHECK(tables.options().lr == 0.1);               // as before fit
    CHECK(tables.table_optimizer(0).options().lr == 0.1);
    CHECK(model.input().table(0) != table_before);
    fit(model, tables, loss, d.train, nullptr, o);
    CHECK(tables.table_optimizer(0).steps() == 32);

    // A table optimizer of another input is refused before anything changes.
    FeatureSpec other = d.spec;
    other.tables[0].rows = 41;
    FeatureModel<MMoE<float>> wrong(other, click_mmoe(), 7);
    TableOptimizer<float, SparseAdagrad<float>> wrong_tables(wrong.input(), ao);
    CHECK_THROWS_WITH(fit(model, wrong_tables, loss, d.train, nullptr, o),
                      Contains("the table optimizer's table 0 is 4 x 41, the model's 'items' is 4 x 40"));
}

TEST_CASE("fit: bad data, options or a loss of other tasks are refused before the first step", "[features][training][errors]") {
    const ItemData d = item_data(64, 16, 9);
    FeatureModel<MMoE<float>> model(d.spec, click_mmoe(), 7);
    MultiTaskLoss<float> loss(model.tasks());
    const Matrix<float> table = model.input().table(0);
    const Vector<float> params = model.params().values();
    FeatureData<float> bad_valid = d.valid;
    bad_valid.features.sparse["history"].ids.back() = -1;
    CHECK_THROWS_WITH(fit(model, loss, d.train, &bad_valid, quiet(1, 0.01)),
                      Contains("(validation)") && Contains("feature 'history'") && Contains("id -1"));
    CHECK_THROWS_WITH(fit(model, loss, d.train, nullptr, quiet(0, 0.01)), Contains("epochs must be positive"));
    MultiTaskLoss<float> other_loss({binary_task("like")});
    CHECK_THROWS_WITH(fit(model, other_loss, d.train, nullptr, quiet(1, 0.01)), Contains("the loss was built for the tasks"));
    FeatureData<float> one = d.train;
    const Index first[] = {0};
    gather_samples(d.train.features, first, 1, one.features);
    one.labels = d.train.labels.leftCols(1);
    CHECK_THROWS_WITH(fit(model, loss, one, nullptr, quiet(1, 0.01)), Contains("a step needs at least 2"));
    CHECK(model.input().table(0) == table);
    CHECK(model.params().values() == params);
}

TEST_CASE("fit: a FeatureModel trains to the same bits on 1, 2 and 3 threads", "[features][training][threads]") {
    // Features pool, and tables step, on the threads; a shared table's gradient is merged in the
    // spec's order on one thread. Every loop that can go parallel does (always_parallel).
    const ItemData d = item_data(300, 10, 12);
    auto train = [&](int threads) {
#ifdef _OPENMP
        const int saved = omp_get_max_threads();
        omp_set_num_threads(threads);
#endif
        detail::always_parallel() = true;
        FeatureModel<MMoE<float>> model(d.spec, click_mmoe(), 3);
        MultiTaskLoss<float> loss(model.tasks());
        FitOptions o = quiet(2, 0.01);
        o.batch_size = 100;
        fit(model, loss, d.train, nullptr, o);
        detail::always_parallel() = false;
#ifdef _OPENMP
        omp_set_num_threads(saved);
#endif
        return std::make_pair(Vector<float>(model.params().values()), Matrix<float>(model.input().table(0)));
    };
    const auto one = train(1);
    for (int threads : {2, 3}) {
        INFO(threads << " threads");
        const auto many = train(threads);
        CHECK(many.first == one.first);
        CHECK(many.second == one.second);
    }
}

}  // namespace test_feature_training
