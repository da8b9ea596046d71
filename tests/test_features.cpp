// ID features in the models: FeatureSpec checks, FeatureInput's layout against EmbeddingBag,
// shared tables, gradient checks of an MMoE, PLE and SparseMMoE behind a FeatureInput, bad batches
// (errors name the feature and change nothing), TableOptimizer, hashing and vocabularies, and an
// MMoE that learns from an ID what the dense features cannot tell it.
#include <cmath>
#include <limits>

#include "support/catch.hpp"
#include "support/fixtures.hpp"
#include "support/gradcheck.hpp"
#include "support/specs.hpp"
#include "support/temp_dir.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_features {

using namespace moe;
using Catch::Matchers::Contains;

namespace {
/// 2 dense features (normalised), an item table shared by item_id (sum) and recent_items (mean,
/// padding row 0, at most 4 ids), a user table pooled by max, and a category with per-id weights.
FeatureSpec small_features() {
    FeatureSpec s;
    s.dense = 2;
    s.dense_mean = {0.5, -1.0};
    s.dense_std = {2.0, 0.5};
    s.add_table("items", 9, 3, 0).add_table("users", 5, 2).add_table("categories", 4, 2);
    s.add_feature("item_id", "items")
        .add_feature("recent_items", "items", PoolingMode::mean, 4)
        .add_feature("user_id", "users", PoolingMode::max)
        .add_feature("category", "categories", PoolingMode::sum);
    return s;
}

/// Five samples: repeated ids, an empty history, a history of padding only, weighted categories.
FeatureBatch<double> small_batch() {
    FeatureBatch<double> b;
    b.dense = moe::testing::random_matrix(2, 5, 21);
    b.sparse["item_id"] = Bags<double>::from_lengths({3, 5, 5, 8, 1}, {1, 1, 1, 1, 1});
    b.sparse["recent_items"] = Bags<double>::from_lengths({5, 2, 2, 0, 0, 7, 3, 8, 1, 6}, {3, 0, 2, 4, 1});
    b.sparse["user_id"] = Bags<double>::from_lengths({1, 4, 0, 2, 2, 3}, {2, 1, 1, 0, 2});
    b.sparse["category"] = Bags<double>::from_lengths({1, 3, 2, 0, 1, 2}, {2, 1, 1, 1, 1}, {0.5, 2.0, 1.0, -1.5, 3.0, 0.25});
    return b;
}

/// The row-sparse gradient of a table as a dense dim x rows matrix.
Matrix<double> dense_grad(const RowSparseGrad<double>& g, const Matrix<double>& table) {
    Matrix<double> d = Matrix<double>::Zero(table.rows(), table.cols());
    for (std::size_t j = 0; j < g.rows.size(); ++j) d.col(Index(g.rows[j])) = g.values.view().col(Index(j));
    return d;
}

/// dense_grad for any scalar type.
template <class T>
Matrix<T> dense_grad_of(const RowSparseGrad<T>& g, const Matrix<T>& table) {
    Matrix<T> d = Matrix<T>::Zero(table.rows(), table.cols());
    for (std::size_t j = 0; j < g.rows.size(); ++j) d.col(Index(g.rows[j])) = g.values.view().col(Index(j));
    return d;
}

/// Gradient check of a FeatureModel through a MultiTaskLoss: every table entry, every parameter.
template <class Net>
double gradcheck_feature_model(FeatureModel<Net>& model, const FeatureBatch<double>& batch) {
    MultiTaskLoss<double> loss(model.tasks());
    const Matrix<double> y = moe::testing::labels_for(model.tasks(), 5, 12);
    model.train();
    moe::testing::freeze_dropout(model.net());
    auto f = [&] { return loss.forward(model.forward(batch), y) + model.aux_loss(); };
    model.zero_grad();
    f();
    model.backward(loss.backward());
    std::vector<moe::testing::Probe> probes;
    for (Index t = 0; t < model.input().tables(); ++t) {
        const Matrix<double> g = dense_grad(model.input().grad(t), model.input().table(t));
        probes.push_back({model.input().spec().tables[std::size_t(t)].name, model.input().table(t).data(),
                          std::vector<double>(g.data(), g.data() + g.size())});
    }
    moe::testing::add_parameter_probes(model.net(), probes);
    const auto r = moe::testing::check_gradients(f, probes);
    INFO(r.report << "worst: " << r.worst);
    return r.max_error;
}
}  // namespace

TEST_CASE("FeatureInput: dense part normalised on top, then each feature pooled from its table", "[features]") {
    FeatureInput<double> in(small_features());
    REQUIRE(in.width() == 2 + 3 + 3 + 2 + 2);
    Rng rng(5);
    in.reset_parameters(rng);
    CHECK(in.table("items").col(0).isZero());  // the padding row
    const FeatureBatch<double> batch = small_batch();
    const Matrix<double> x = in.forward(batch);
    REQUIRE(x.rows() == 12);
    REQUIRE(x.cols() == 5);
    CHECK((x.row(0).array() - (batch.dense.row(0).array() - 0.5) / 2.0).abs().maxCoeff() < 1e-15);
    CHECK((x.row(1).array() - (batch.dense.row(1).array() + 1.0) / 0.5).abs().maxCoeff() < 1e-15);
    // Each block equals an EmbeddingBag with the same table and pooling.
    const std::vector<std::pair<Index, Index>> blocks{{2, 3}, {5, 3}, {8, 2}, {10, 2}};
    for (std::size_t i = 0; i < 4; ++i) {
        const SparseFeatureSpec& f = in.spec().sparse[i];
        const TableSpec& t = in.spec().tables[std::size_t(in.spec().table_index(f.table))];
        EmbeddingBag<double> bag(t.rows, t.dim, f.pooling, t.padding_idx);
        bag.table() = in.table(f.table);
        const Matrix<double> expected = bag.forward(batch.sparse.at(f.name));
        CHECK((x.middleRows(blocks[i].first, blocks[i].second) - expected).cwiseAbs().maxCoeff() == 0.0);
    }
    // Inference gives the same matrix without touching the layer's state.
    Buffer<double> out;
    CHECK((in.infer(batch, out) - x).cwiseAbs().maxCoeff() == 0.0);
}

TEST_CASE("FeatureInput: a shared table's gradient is the sum of its features' gradients", "[features]") {
    FeatureSpec s = small_features();
    s.add_feature("similar_items", "items", PoolingMode::sum);  // a third feature on the items table
    FeatureInput<double> in(s);
    Rng rng(6);
    in.reset_parameters(rng);
    FeatureBatch<double> batch = small_batch();
    batch.sparse["similar_items"] = Bags<double>::from_lengths({8, 8, 4, 6}, {0, 2, 1, 0, 1});
    in.forward(batch);
    const Matrix<double> dx = moe::testing::random_matrix(in.width(), 5, 9);
    in.backward(dx);
    const Matrix<double> shared = dense_grad(in.grad(0), in.table(0));
    Matrix<double> expected = Matrix<double>::Zero(3, 9);
    const std::vector<Index> first_rows{2, 5, 12};
    const std::vector<std::string> names{"item_id", "recent_items", "similar_items"};
    for (std::size_t i = 0; i < 3; ++i) {
        EmbeddingBag<double> bag(9, 3, s.sparse[i == 2 ? 4 : i].pooling, 0);
        bag.table() = in.table(0);
        bag.forward(batch.sparse.at(names[i]));
        expected += dense_grad(bag.backward(dx.middleRows(first_rows[i], 3)), bag.table());
    }
    CHECK((shared - expected).cwiseAbs().maxCoeff() < 1e-14);
    CHECK(std::is_sorted(in.grad(0).rows.begin(), in.grad(0).rows.end()));
}

TEST_CASE("FeatureInput: a copy has its own gradients, equal to the original's", "[features]") {
    FeatureSpec s = small_features();
    s.add_feature("similar_items", "items", PoolingMode::sum);  // three features on the items table: merged
    FeatureInput<double> in(s);
    Rng rng(8);
    in.reset_parameters(rng);
    FeatureBatch<double> batch = small_batch();
    batch.sparse["similar_items"] = Bags<double>::from_lengths({8, 8, 4, 6}, {0, 2, 1, 0, 1});
    in.forward(batch);
    in.backward(moe::testing::random_matrix(in.width(), 5, 4));
    const FeatureInput<double> copy = in;
    for (Index t = 0; t < 3; ++t) {
        CHECK(&copy.grad(t) != &in.grad(t));
        CHECK(copy.grad(t).rows == in.grad(t).rows);
        CHECK((Matrix<double>(copy.grad(t).values.view()) - Matrix<double>(in.grad(t).values.view())).cwiseAbs().maxCoeff() == 0.0);
    }
    CHECK_THROWS_WITH(in.grad(3), Contains("no table 3"));
}

TEST_CASE("FeatureModel: gradient checks of MMoE, PLE and SparseMMoE behind a feature input", "[features][gradcheck]") {
    const FeatureBatch<double> batch = small_batch();
    MMoESpec m = moe::testing::small_mmoe();
    m.input = 0;  // taken from the features
    m.batchnorm = true;
    m.tower_dropout = 0.25;
    FeatureModel<MMoE<double>> mmoe(small_features(), m, 1);
    CHECK(mmoe.net().in_features() == 12);
    CHECK(gradcheck_feature_model(mmoe, batch) < 1e-6);
    PLESpec p = moe::testing::small_ple();
    p.input = 12;
    FeatureModel<PLE<double>> ple(small_features(), p, 2);
    CHECK(gradcheck_feature_model(ple, batch) < 1e-6);
    SparseMMoESpec sp = moe::testing::small_sparse_mmoe();
    sp.input = 0;
    FeatureModel<SparseMMoE<double>> sparse(small_features(), sp, 3);
    CHECK(gradcheck_feature_model(sparse, batch) < 1e-6);
    SharedBottomSpec b = moe::testing::small_shared_bottom();
    b.input = 0;
    FeatureModel<SharedBottom<double>> bottom(small_features(), b, 4);
    CHECK(gradcheck_feature_model(bottom, batch) < 1e-6);
}

TEST_CASE("FeatureModel: predict equals the evaluation forward", "[features]") {
    MMoESpec m = moe::testing::small_mmoe({binary_task("click"), regression_task("watch")});
    m.input = 0;
    m.batchnorm = true;
    FeatureModel<MMoE<float>> model(small_features(), m, 7);
    FeatureBatch<float> batch;
    const FeatureBatch<double> b = small_batch();
    batch.dense = b.dense.cast<float>();
    for (const auto& [name, bags] : b.sparse) {
        Bags<float> fb;
        fb.ids = bags.ids;
        fb.offsets = bags.offsets;
        fb.weights.assign(bags.weights.begin(), bags.weights.end());
        batch.sparse[name] = fb;
    }
    model.eval();
    const auto& out = model.forward(batch);
    const Matrix<float> logit = out[0];
    FeatureWorkspace<float> ws;
    const auto& pred = model.predict(batch, ws);
    CHECK((pred[0].array() - 1.0f / (1.0f + (-logit.array()).exp())).abs().maxCoeff() < 1e-6f);
}

TEST_CASE("FeatureSpec and FeatureModel: bad specs are refused with the table or feature named", "[features][errors]") {
    auto refused = [](FeatureSpec s, const std::string& what) {
        INFO(what);
        CHECK_THROWS_WITH(FeatureInput<float>(s), Contains(what));
    };
    FeatureSpec s = small_features();
    s.sparse[1].table = "itemz";
    refused(s, "feature 'recent_items' uses table 'itemz'");
    s = small_features();
    s.add_table("items", 3, 3);
    refused(s, "two tables are called 'items'");
    s = small_features();
    s.add_feature("user_id", "users");
    refused(s, "two ID features are called 'user_id'");
    s = small_features();
    s.tables[1].dim = 0;
    refused(s, "table 'users' must have positive rows and dim");
    s = small_features();
    s.dense = Index(1) << 41;
    refused(s, "dense must be in [0, 2^40]");
    s = small_features();
    s.tables[0].padding_idx = 9;
    refused(s, "padding_idx 9 is outside the table of 9 rows");
    s = small_features();
    s.dense_std[1] = 0;
    refused(s, "dense_std[1] must be finite and > 0");
    s = small_features();
    s.dense_mean = {1.0};
    refused(s, "one entry per dense feature (2), got 1");
    s = small_features();
    s.sparse[0].max_length = -1;
    refused(s, "feature 'item_id': max_length must be >= 0");
    refused(FeatureSpec{}, "no features");
    MMoESpec m = moe::testing::small_mmoe();
    m.input = 5;
    CHECK_THROWS_WITH(FeatureModel<MMoE<float>>(small_features(), m), Contains("the model's spec has input 5 but the features give 12"));
}

TEST_CASE("FeatureModel: a bad batch is refused naming the feature, and changes nothing", "[features][errors]") {
    MMoESpec m = moe::testing::small_mmoe({binary_task("click")});
    m.input = 0;
    FeatureModel<MMoE<double>> model(small_features(), m, 3);
    TableOptimizer<double> tables(model.input());
    MultiTaskLoss<double> loss(model.tasks());
    const Matrix<double> y = moe::testing::labels_for(model.tasks(), 5, 1);
    // One good step, so that the optimizer has state to keep.
    FeatureBatch<double> good = small_batch();
    loss.forward(model.forward(good), y);
    model.backward(loss.backward());
    tables.step(model.input());
    const Matrix<double> items = model.input().table(0);
    const std::vector<std::int64_t> grad_rows = model.input().grad(0).rows;

    auto refused = [&](FeatureBatch<double> bad, const std::string& what) {
        INFO(what);
        CHECK_THROWS_WITH(model.forward(bad), Contains(what));
        CHECK((model.input().table(0) - items).cwiseAbs().maxCoeff() == 0.0);
        CHECK(model.input().grad(0).rows == grad_rows);
    };
    FeatureBatch<double> bad = good;
    bad.sparse["item_id"].ids[2] = 9;
    refused(bad, "feature 'item_id': id 9 at position 2 is outside the table of 9 rows");
    bad = good;
    bad.sparse["user_id"].ids[0] = -1;
    refused(bad, "feature 'user_id': id -1 at position 0");
    bad = good;
    bad.sparse["recent_items"].offsets = {0, 3, 2, 5, 9, 10};
    refused(bad, "feature 'recent_items': offsets must not decrease");
    bad = good;
    bad.sparse["recent_items"].offsets.back() = 11;
    refused(bad, "feature 'recent_items': the last offset is 11 but there are 10 ids");
    bad = good;
    bad.sparse["recent_items"] = Bags<double>::from_lengths({1, 2, 3, 4, 5, 6, 7, 8, 1, 2}, {0, 5, 1, 2, 2});
    refused(bad, "feature 'recent_items': sample 1 has 5 ids, more than its max_length 4");
    bad = good;
    bad.sparse["category"].weights[3] = std::nan("");
    refused(bad, "feature 'category': the weight of id 0 at position 3 is nan");
    bad = good;
    bad.sparse["user_id"].weights.assign(6, 1.0);
    refused(bad, "feature 'user_id': per-id weights need mode sum");
    bad = good;
    bad.sparse["item"] = bad.sparse["item_id"];
    refused(bad, "the batch has feature 'item', which the spec does not have");
    bad = good;
    bad.sparse.erase("category");
    refused(bad, "the batch has no feature 'category'");
    bad = good;
    bad.sparse["item_id"] = Bags<double>::from_lengths({1, 2, 3, 4}, {1, 1, 1, 1});
    refused(bad, "feature 'item_id' has 4 bags, the batch has 5 samples");
    bad = good;
    bad.dense = Matrix<double>::Zero(3, 5);
    refused(bad, "the dense features are 3 x 5, the spec has 2 dense features");
    CHECK_THROWS_WITH(Bags<double>::from_lengths({1, 2}, {1, 2}), Contains("the lengths up to length 1 (2) sum to more than the 2 ids"));
    CHECK_THROWS_WITH(Bags<double>::from_lengths({1, 2, 3}, {1, 1}), Contains("the lengths sum to 2 but there are 3 ids"));
    const std::int64_t huge = std::numeric_limits<std::int64_t>::max();  // no overflow of the sum
    CHECK_THROWS_WITH(Bags<double>::from_lengths({1, 2}, {1, huge}), Contains("sum to more than the 2 ids"));
    // The model still trains on the good batch, as before.
    loss.forward(model.forward(good), y);
    model.backward(loss.backward());
    tables.step(model.input());
    CHECK((model.input().table(0) - items).cwiseAbs().maxCoeff() > 0.0);
}

TEST_CASE("FeatureModel: an MMoE learns from an ID what the dense features cannot tell it", "[features][training]") {
    // The label is a fixed random function of the item id (50 items); the dense features are noise.
    FeatureSpec f;
    f.dense = 3;
    f.add_table("items", 50, 4).add_feature("item_id", "items");
    MMoESpec m = moe::testing::small_mmoe({binary_task("click")});
    m.input = 0;
    FeatureModel<MMoE<float>> model(f, m, 11);
    AdamOptions ao;
    ao.lr = 0.01;
    Adam<float> adam(ao);
    SparseAdamOptions so;
    so.lr = 0.05;
    TableOptimizer<float> tables(model.input(), so);
    MultiTaskLoss<float> loss(model.tasks());
    Rng rng(2);
    std::vector<float> label_of(50);
    for (auto& l : label_of) l = rng.uniform() < 0.5 ? 0.0f : 1.0f;
    auto make_batch = [&](Index n, FeatureBatch<float>& b, Matrix<float>& y) {
        b.dense.resize(3, n);
        y.resize(1, n);
        Bags<float>& bags = b.sparse["item_id"];
        bags.ids.clear();
        bags.offsets.assign(1, 0);
        for (Index i = 0; i < n; ++i) {
            for (Index j = 0; j < 3; ++j) b.dense(j, i) = float(rng.normal());
            const auto id = std::int64_t(rng.uniform() * 50) % 50;
            bags.ids.push_back(id);
            bags.offsets.push_back(std::int64_t(bags.ids.size()));
            y(0, i) = label_of[std::size_t(id)];
        }
    };
    FeatureBatch<float> batch;
    Matrix<float> y;
    float first = 0, last = 0;
    for (int step = 0; step < 300; ++step) {
        make_batch(64, batch, y);
        const float l = loss.forward(model.forward(batch), y);
        if (step == 0) first = l;
        last = l;
        model.zero_grad();
        model.backward(loss.backward());
        adam.step(model.params());
        tables.step(model.input());
    }
    make_batch(500, batch, y);
    FeatureWorkspace<float> ws;
    const auto& pred = model.predict(batch, ws);
    const double a = *auc<float>(pred[0], y);
    INFO("loss " << first << " -> " << last << ", AUC " << a);
    CHECK(last < 0.5f * first);
    CHECK(a > 0.95);
}

TEST_CASE("TableOptimizer: SparseAdagrad row-wise steps only the touched rows", "[features]") {
    FeatureInput<float> in(small_features());
    Rng rng(3);
    in.reset_parameters(rng);
    SparseAdagradOptions o;
    o.rowwise = true;
    o.lr = 0.1;
    TableOptimizer<float, SparseAdagrad<float>> opt(in, o);
    FeatureBatch<float> b;
    b.dense = Matrix<float>::Zero(2, 2);
    b.sparse["item_id"] = Bags<float>::from_lengths({4, 4}, {1, 1});
    b.sparse["recent_items"] = Bags<float>::from_lengths({}, {0, 0});
    b.sparse["user_id"] = Bags<float>::from_lengths({1, 3}, {1, 1});
    b.sparse["category"] = Bags<float>::from_lengths({}, {0, 0});
    const Matrix<float> items = in.table(0), categories = in.table(2);
    in.forward(b);
    const Matrix<float> dx = Matrix<float>::Ones(in.width(), 2);
    in.backward(dx);
    CHECK(in.grad(2).rows.empty());  // categories: no ids, no gradient, no step
    opt.step(in);
    CHECK((in.table(2) - categories).cwiseAbs().maxCoeff() == 0.0f);
    for (Index r = 0; r < 9; ++r) CHECK((in.table(0).col(r) != items.col(r)) == (r == 4));
}

TEST_CASE("Hashing: 64-bit FNV-1a as documented, modulo the table", "[features]") {
    CHECK(fnv1a64(std::string_view("")) == 0xcbf29ce484222325ULL);
    CHECK(fnv1a64(std::string_view("a")) == 0xaf63dc4c8601ec8cULL);
    CHECK(fnv1a64(std::string_view("foobar")) == 0x85944171f73967e8ULL);
    CHECK(fnv1a64(std::int64_t(42)) == 18391255480883862255ULL);  // Python: fnv1a64((42).to_bytes(8, "little"))
    CHECK(fnv1a64(std::int64_t(-1)) == 10157053723145373757ULL);
    CHECK(hashed_id("item_42", 1000) == 405);
    CHECK(hashed_id(std::int64_t(42), 1000) == 255);
    CHECK_THROWS_WITH(hashed_id("x", 0), Contains("rows must be positive"));
    CHECK_THROWS_WITH(hashed_id(std::int64_t(7), -3), Contains("rows must be positive, got -3"));
    CHECK_THROWS_WITH(encode_hashed_bags<float>({"a"}, 0), Contains("rows must be positive"));
    const Bags<float> bags = encode_hashed_bags<float>({"a|b", "", "foobar"}, 7);
    CHECK(bags.offsets == std::vector<std::int64_t>{0, 2, 2, 3});
    CHECK(bags.ids == std::vector<std::int64_t>{hashed_id("a", 7), hashed_id("b", 7), hashed_id("foobar", 7)});
}

TEST_CASE("Vocabulary: most frequent first, rare and unseen values out of vocabulary", "[features]") {
    const Vocabulary v = Vocabulary::build({"b", "a", "c", "a", "b", "d", "a", "c", "e"}, 2);
    CHECK(v.tokens() == std::vector<std::string>{"a", "b", "c"});  // a: 3, then b and c (2 each) in byte order
    CHECK(v.size() == 4);
    CHECK(v.id("a") == 1);
    CHECK(v.id("c") == 3);
    CHECK(v.id("d") == 0);      // seen once: below min_count
    CHECK(v.id("zzz") == 0);    // never seen
    CHECK(Vocabulary(v.tokens()).id("b") == 2);  // read back from its tokens
    const Bags<double> bags = encode_bags<double>({"a|d", "", "c|b|a"}, v);
    CHECK(bags.ids == std::vector<std::int64_t>{1, 0, 3, 2, 1});
    CHECK(bags.offsets == std::vector<std::int64_t>{0, 2, 2, 5});
    CHECK(encode_bags<double>({"a||b"}, v).ids == std::vector<std::int64_t>{1, 0, 2});  // "" is a value, unknown here
    CHECK_THROWS_WITH(Vocabulary({"x", "y", "x"}), Contains("token 'x' appears twice (at 0 and 2)"));
    CHECK_THROWS_WITH(Vocabulary::build({"x"}, 0), Contains("min_count must be >= 1"));
}

TEST_CASE("Feature model files: tables, vocabularies and both optimizers' state round-trip; a resumed run continues bit for bit", "[features][model_file]") {
    moe::testing::TempDir dir("feature_model_file");
    FeatureSpec f = small_features();
    f.tables[2].vocabulary = {"shoes", "books", "garden"};  // categories: 4 rows, id 0 out of vocabulary
    MMoESpec m = moe::testing::small_mmoe({binary_task("click"), regression_task("watch")});
    m.input = 0;
    m.batchnorm = true;
    using Net = MMoE<double>;
    FeatureModel<Net> model(f, m, 5);
    CHECK(model.input().vocabulary(2).id("books") == 2);
    Adam<double> adam;
    TableOptimizer<double> tables(model.input());
    MultiTaskLoss<double> loss(model.tasks());
    const FeatureBatch<double> batch = small_batch();
    const Matrix<double> y = moe::testing::labels_for(model.tasks(), 5, 3);
    auto step = [&](FeatureModel<Net>& fm, Adam<double>& a, TableOptimizer<double>& t) {
        fm.train();
        const double l = loss.forward(fm.forward(batch), y);
        fm.zero_grad();
        fm.backward(loss.backward());
        a.step(fm.params());
        t.step(fm.input());
        return l;
    };
    for (int i = 0; i < 3; ++i) step(model, adam, tables);
    const std::string path = dir.file("features.safetensors");
    save(model, path, &adam, &tables);

    Adam<double> adam2;
    FeatureInput<double> shape_only(f);
    TableOptimizer<double> tables2(shape_only);
    FeatureModel<Net> loaded = load_feature_model<Net>(path, {}, &adam2, &tables2);
    CHECK(loaded.input().spec().tables[2].vocabulary == f.tables[2].vocabulary);
    CHECK(loaded.input().vocabulary(2).id("garden") == 3);
    for (Index t = 0; t < 3; ++t) CHECK((loaded.input().table(t) - model.input().table(t)).cwiseAbs().maxCoeff() == 0.0);
    CHECK((loaded.params().values() - model.params().values()).cwiseAbs().maxCoeff() == 0.0);
    // Resumed: the next two steps give the same bits as continuing the original.
    for (int i = 0; i < 2; ++i) CHECK(step(loaded, adam2, tables2) == step(model, adam, tables));
    for (Index t = 0; t < 3; ++t) CHECK((loaded.input().table(t) - model.input().table(t)).cwiseAbs().maxCoeff() == 0.0);
    CHECK((loaded.params().values() - model.params().values()).cwiseAbs().maxCoeff() == 0.0);
    // Predictions of the loaded model (evaluation mode) equal the original's.
    model.eval();
    loaded.eval();
    FeatureWorkspace<double> w1, w2;
    CHECK((Matrix<double>(model.predict(batch, w1)[1]) - Matrix<double>(loaded.predict(batch, w2)[1])).cwiseAbs().maxCoeff() == 0.0);

    // A plain model file is not a feature model file, and the other way round.
    CHECK_THROWS_WITH(load<Net>(path), Contains("holds a model with ID features"));
    const std::string plain = dir.file("plain.safetensors");
    save(model.net(), plain);
    CHECK_THROWS_WITH(load_feature_model<Net>(plain), Contains("has no 'features'"));
    // A table optimizer built for other features is refused before anything is written.
    FeatureSpec one_table;
    one_table.add_table("t", 3, 2).add_feature("f", "t");
    FeatureInput<double> other(one_table);
    TableOptimizer<double> other_tables(other);
    CHECK_THROWS_WITH(save(model, dir.file("mismatch.safetensors"), &adam, &other_tables),
                      Contains("the table optimizer has 1 tables, the model 3"));
    // Asking for table optimizer state that was not saved, or of another kind.
    const std::string bare = dir.file("bare.safetensors");
    save(model, bare);
    TableOptimizer<double> tables3(shape_only);
    CHECK_THROWS_WITH(load_feature_model<Net>(bare, {}, nullptr, &tables3), Contains("holds no table optimizer state"));
    TableOptimizer<double, SparseAdagrad<double>> adagrad(shape_only);
    CHECK_THROWS_WITH((load_feature_model<Net, SparseAdagrad<double>>(path, {}, nullptr, &adagrad)),
                      Contains("holds the state of a sparse_adam table optimizer, loading into a sparse_adagrad"));
}

TEST_CASE("Feature model files: a table or vocabulary that disagrees with the features is refused, naming it", "[features][model_file][errors]") {
    moe::testing::TempDir dir("feature_model_file_bad");
    MMoESpec m = moe::testing::small_mmoe({binary_task("click")});
    m.input = 0;
    using Net = MMoE<float>;
    FeatureModel<Net> model(small_features(), m, 5);
    const std::string path = dir.file("good.safetensors");
    save(model, path);
    auto rewritten = [&](const std::string& name, auto&& change) {
        SafetensorsFile file = read_safetensors(path);
        change(file);
        write_safetensors(dir.file(name), file);
        return dir.file(name);
    };
    // The users table saved with 4 rows where the features say 5.
    const std::string short_table = rewritten("short.safetensors", [](SafetensorsFile& file) {
        Tensor& t = file.tensors.at("tables.users.weight");
        t.shape = {4, 2};
        t.bytes.resize(4 * 2 * sizeof(float));
    });
    CHECK_THROWS_WITH(load_feature_model<Net>(short_table), Contains("tensor 'tables.users.weight' has shape [4, 2], the spec needs [5, 2]"));
    // A vocabulary of the wrong size for its table.
    const std::string bad_vocabulary = rewritten("vocabulary.safetensors", [](SafetensorsFile& file) {
        auto j = nlohmann::json::parse(file.metadata.at("features"));
        j["tables"][1]["vocabulary"] = {"ann", "bob"};
        file.metadata["features"] = j.dump();
    });
    CHECK_THROWS_WITH(load_feature_model<Net>(bad_vocabulary), Contains("table 'users' has 5 rows but a vocabulary of 2 values"));
    // A missing table, an unknown table tensor, a non-finite entry.
    const std::string missing = rewritten("missing.safetensors", [](SafetensorsFile& file) { file.tensors.erase("tables.items.weight"); });
    CHECK_THROWS_WITH(load_feature_model<Net>(missing), Contains("tensor 'tables.items.weight' is missing"));
    const std::string extra = rewritten("extra.safetensors", [](SafetensorsFile& file) {
        file.tensors["tables.movies.weight"] = file.tensors.at("tables.users.weight");
    });
    CHECK_THROWS_WITH(load_feature_model<Net>(extra), Contains("tensor 'tables.movies.weight' is not a table of the features"));
    const std::string nan = rewritten("nan.safetensors", [](SafetensorsFile& file) {
        Tensor& t = file.tensors.at("tables.items.weight");
        const float v = std::nanf("");
        std::memcpy(t.bytes.data() + 8, &v, 4);
    });
    CHECK_THROWS_WITH(load_feature_model<Net>(nan), Contains("tensor 'tables.items.weight' holds a non-finite value"));
    // A lying features config: a table of 10^12 rows is refused before anything is allocated.
    const std::string huge = rewritten("huge.safetensors", [](SafetensorsFile& file) {
        auto j = nlohmann::json::parse(file.metadata.at("features"));
        j["tables"][0]["rows"] = 1000000000000LL;
        file.metadata["features"] = j.dump();
    });
    CHECK_THROWS_WITH(load_feature_model<Net>(huge), Contains("but the file's tensors hold"));
    const std::string unknown = rewritten("unknown.safetensors", [](SafetensorsFile& file) {
        auto j = nlohmann::json::parse(file.metadata.at("features"));
        j["sparse"][0]["poling"] = "sum";
        file.metadata["features"] = j.dump();
    });
    CHECK_THROWS_WITH(load_feature_model<Net>(unknown), Contains("features.sparse[0]: unknown field 'poling'"));
}

TEMPLATE_TEST_CASE("PyTorch parity: an MMoE behind ID features, forward, backward, Adam + SparseAdam, Adagrad", "[features][parity]", float, double) {
    // tools/make_feature_reference.py: the model file PyTorch wrote loads here, and one training step
    // computes what PyTorch computed.
    using T = TestType;
    const std::string tag = std::is_same_v<T, double> ? "f64" : "f32";
    const SafetensorsFile io = read_safetensors(moe::testing::fixture_path("features_mmoe_" + tag + "_io.safetensors"));
    FeatureBatch<T> batch;
    batch.dense = io.at("dense").batch<T>();
    for (const char* name : {"item_id", "recent_items", "user_id", "category"}) {
        Bags<T>& b = batch.sparse[name];
        b.ids = io.at(std::string(name) + ".ids").values<std::int64_t>();
        b.offsets = io.at(std::string(name) + ".offsets").values<std::int64_t>();
    }
    batch.sparse["category"].weights = io.at("category.weights").values<T>();
    const Matrix<T> labels = io.at("labels").batch<T>();
    const std::string model_path = moe::testing::fixture_path("features_mmoe_" + tag + ".safetensors");

    auto forward_backward = [&](FeatureModel<MMoE<T>>& model, MultiTaskLoss<T>& loss) {
        model.train();
        const auto& out = model.forward(batch);
        const T l = loss.forward(out, labels);
        for (std::size_t t = 0; t < out.size(); ++t) MOE_CHECK_CLOSE(Matrix<T>(out[t]), io.at("out." + std::to_string(t)).batch<T>(), T);
        CHECK(std::abs(double(l) - double(io.at("loss").values<T>()[0])) <= moe::testing::parity_tolerance<T>());
        model.zero_grad();
        model.backward(loss.backward());
    };
    FeatureModel<MMoE<T>> model = load_feature_model<MMoE<T>>(model_path);
    MultiTaskLoss<T> loss(model.tasks());
    forward_backward(model, loss);
    for (const auto& e : model.params().entries()) {
        INFO(e.name);
        const std::vector<T> expected = io.at("grad." + e.name).template values<T>();
        MOE_CHECK_CLOSE(Matrix<T>(model.params().grads().segment(e.offset, e.rows * e.cols)),
                        (Eigen::Map<const Matrix<T>>(expected.data(), Index(expected.size()), 1)), T);
    }
    for (Index t = 0; t < model.input().tables(); ++t) {
        const std::string name = "tables." + model.input().spec().tables[std::size_t(t)].name + ".weight";
        INFO(name);
        MOE_CHECK_CLOSE(dense_grad_of(model.input().grad(t), model.input().table(t)), io.at("grad." + name).template batch<T>(), T);
    }
    AdamOptions ao;
    ao.lr = 0.01;
    Adam<T> adam(ao);
    SparseAdamOptions so;
    so.lr = 0.01;
    TableOptimizer<T> tables(model.input(), so);
    adam.step(model.params());
    tables.step(model.input());
    for (const auto& e : model.params().entries()) {
        INFO(e.name);
        // A bias whose unit's ReLU is active on the whole batch, before a BatchNorm, has a gradient
        // of 0 in exact arithmetic: rounding noise here and in PyTorch, and Adam's first step on
        // noise moves by +-lr with the noise's sign. Those entries are left out.
        const std::vector<T> g = io.at("grad." + e.name).template values<T>();
        const std::vector<T> expected = io.at("adam." + e.name).template values<T>();
        const auto actual = model.params().values().segment(e.offset, e.rows * e.cols);
        double scale = 1;
        for (const T v : g) scale = std::max(scale, std::abs(double(v)));
        const double noise = (std::is_same_v<T, double> ? 1e-10 : 1e-4) * scale;  // f32: seen up to 7e-6 of the scale
        double worst = 0;
        for (std::size_t i = 0; i < g.size(); ++i)
            if (std::abs(double(g[i])) > noise) worst = std::max(worst, std::abs(double(actual(Index(i))) - double(expected[i])));
        CHECK(worst <= moe::testing::parity_tolerance<T>());
    }
    for (Index t = 0; t < model.input().tables(); ++t)
        MOE_CHECK_CLOSE(model.input().table(t), io.at("adam.tables." + model.input().spec().tables[std::size_t(t)].name + ".weight").template batch<T>(), T);

    FeatureModel<MMoE<T>> again = load_feature_model<MMoE<T>>(model_path);
    forward_backward(again, loss);
    SparseAdagradOptions go;
    go.lr = 0.1;
    TableOptimizer<T, SparseAdagrad<T>> adagrad(again.input(), go);
    adagrad.step(again.input());
    for (Index t = 0; t < again.input().tables(); ++t)
        MOE_CHECK_CLOSE(again.input().table(t), io.at("adagrad.tables." + again.input().spec().tables[std::size_t(t)].name + ".weight").template batch<T>(), T);
}

}  // namespace test_features
