// ID features pooled by target attention (DIN) inside FeatureInput: the output is TargetAttention
// applied to the history's vectors and the target feature's pooled vector; gradients of the
// tables (shared with the target), the attention MLP and the net checked by finite differences;
// predict equals the evaluation forward; model files keep the attention; fit trains it; bad
// specs and batches are refused by name.
#include <vector>

#include "moe/io/feature_model_file.hpp"
#include "support/catch.hpp"
#include "support/fixtures.hpp"
#include "support/gradcheck.hpp"
#include "support/specs.hpp"
#include "support/temp_dir.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_attention_features {

using namespace moe;
using Catch::Matchers::Contains;

namespace {
/// An item table (padding row 0) read by item_id (the target) and by history (attention, at most
/// 4 ids); a user table pooled plainly.
FeatureSpec attention_features(bool softmax) {
    FeatureSpec s;
    s.dense = 1;
    s.add_table("items", 9, 3, 0).add_table("users", 5, 2);
    s.add_feature("item_id", "items").add_attention_feature("history", "items", "item_id", 4, {5}, softmax).add_feature("user_id", "users");
    return s;
}

/// Five samples: repeated ids, an empty history, a history of padding only.
FeatureBatch<double> attention_batch() {
    FeatureBatch<double> b;
    b.dense = moe::testing::random_matrix(1, 5, 31);
    b.sparse["item_id"] = Bags<double>::from_lengths({3, 5, 5, 8, 1}, {1, 1, 1, 1, 1});
    b.sparse["history"] = Bags<double>::from_lengths({5, 2, 2, 0, 0, 7, 3, 5, 1, 6}, {3, 0, 2, 4, 1});
    b.sparse["user_id"] = Bags<double>::from_lengths({1, 4, 0, 2, 3}, {1, 1, 1, 1, 1});
    return b;
}

template <class T>
Matrix<T> dense_grad_of(const RowSparseGrad<T>& g, const Matrix<T>& table) {
    Matrix<T> d = Matrix<T>::Zero(table.rows(), table.cols());
    for (std::size_t j = 0; j < g.rows.size(); ++j) d.col(Index(g.rows[j])) = g.values.view().col(Index(j));
    return d;
}
Matrix<double> dense_grad(const RowSparseGrad<double>& g, const Matrix<double>& table) { return dense_grad_of(g, table); }

MMoESpec net_spec() {
    MMoESpec m = moe::testing::small_mmoe({binary_task("click"), regression_task("time")});
    m.input = 0;
    return m;
}
}  // namespace

TEST_CASE("Attention features: the output is TargetAttention over the history against the target's vector", "[features][attention]") {
    FeatureInput<double> in(attention_features(false));
    Rng rng(3);
    in.reset_parameters(rng);
    REQUIRE(in.attentions() == 1);
    REQUIRE(in.attention_params().contains("history.mlp.0.weight"));
    const FeatureBatch<double> batch = attention_batch();
    const Matrix<double> y = in.forward(batch);
    CHECK(y.rows() == 1 + 3 + 3 + 2);
    // By hand: the history's vectors, the target's pooled vector (rows 1..3), the layer on them.
    // The history without its padding ids (0), as EmbeddingBag leaves them out of a bag.
    const Matrix<double>& items = in.table("items");
    const std::vector<std::int64_t> ids = {5, 2, 2, 7, 3, 5, 1, 6}, offsets = {0, 3, 3, 3, 7, 8};
    Matrix<double> h(3, Index(ids.size()));
    for (std::size_t c = 0; c < ids.size(); ++c) h.col(Index(c)) = items.col(Index(ids[c]));
    const Matrix<double> target = y.middleRows(1, 3);
    Buffer<double> features, a, b;
    Matrix<double> expect(3, 5);
    in.attention(0).infer(h, offsets, target, features, a, b, expect);
    CHECK((y.middleRows(4, 3) - expect).cwiseAbs().maxCoeff() == 0.0);
    CHECK(y.col(1).middleRows(4, 3).norm() == 0.0);  // an empty history pools to zeros,
    CHECK(y.col(2).middleRows(4, 3).norm() == 0.0);  // and so does one of padding only
}

TEST_CASE("Attention features: gradients of the tables, the attention MLP and the net", "[features][attention][gradcheck]") {
    for (bool softmax : {false, true}) {
        INFO("softmax " << softmax);
        FeatureModel<MMoE<double>> model(attention_features(softmax), net_spec(), 4);
        const FeatureBatch<double> batch = attention_batch();
        MultiTaskLoss<double> loss(model.tasks());
        const Matrix<double> y = moe::testing::labels_for(model.tasks(), 5, 12);
        model.train();
        auto f = [&] { return loss.forward(model.forward(batch), y); };
        model.zero_grad();
        f();
        model.backward(loss.backward());
        std::vector<moe::testing::Probe> probes;
        for (Index t = 0; t < model.input().tables(); ++t) {
            const Matrix<double> g = dense_grad(model.input().grad(t), model.input().table(t));
            probes.push_back({model.input().spec().tables[std::size_t(t)].name, model.input().table(t).data(),
                              std::vector<double>(g.data(), g.data() + g.size())});
        }
        // The padding row gets no gradient from the history either.
        CHECK(dense_grad(model.input().grad(0), model.input().table(0)).col(0).norm() == 0.0);
        moe::testing::add_parameter_probes(model.net(), probes);
        moe::testing::add_parameter_probes(model.input().attention_module(), probes);
        const auto r = moe::testing::check_gradients(f, probes);
        INFO(r.report << "worst: " << r.worst);
        CHECK(r.max_error < 1e-6);
    }
}

TEST_CASE("Attention features: predict equals the evaluation forward; model files keep the attention", "[features][attention]") {
    for (bool softmax : {false, true}) {
        FeatureModel<MMoE<double>> model(attention_features(softmax), net_spec(), 5);
        model.eval();
        const FeatureBatch<double> batch = attention_batch();
        const auto& fwd = model.forward(batch);
        const Matrix<double> logit = fwd[0];
        FeatureWorkspace<double> ws;
        const auto& p = model.predict(batch, ws);
        Buffer<double> head;
        Tower<double>::apply_head(model.tasks()[0], logit, head);
        CHECK((Matrix<double>(p[0]) - Matrix<double>(head.view())).cwiseAbs().maxCoeff() < 1e-15);

        testing::TempDir dir("attention_features");
        const std::string path = dir.file("model.safetensors");
        save(model, path);
        const auto loaded = load_feature_model<MMoE<double>>(path);
        CHECK(loaded.input().attention_params().values() == model.input().attention_params().values());
        FeatureWorkspace<double> ws2;
        CHECK(Matrix<double>(loaded.predict(batch, ws2)[0]) == Matrix<double>(p[0]));
        // An attention tensor the features do not have is refused (strict), a missing one always.
        SafetensorsFile file = read_safetensors(path);
        file.tensors["attention.other.mlp.0.weight"] = file.tensors.at("attention.history.mlp.0.weight");
        write_safetensors(path, file);
        CHECK_THROWS_WITH(load_feature_model<MMoE<double>>(path), Contains("'attention.other.mlp.0.weight' is not a parameter"));
        file.tensors.erase("attention.other.mlp.0.weight");
        file.tensors.erase("attention.history.mlp.2.bias");
        write_safetensors(path, file);
        CHECK_THROWS_WITH(load_feature_model<MMoE<double>>(path), Contains("'attention.history.mlp.2.bias' is missing"));
    }
}

TEST_CASE("Attention features: fit trains the attention MLP with the net", "[features][attention][training]") {
    FeatureModel<MMoE<double>> model(attention_features(false), net_spec(), 6);
    FeatureData<double> data;
    Rng rng(7);
    const Index n = 64;
    data.features.dense = moe::testing::random_matrix(1, n, 8);
    data.labels.resize(2, n);
    for (const char* f : {"item_id", "history", "user_id"}) data.features.sparse[f] = Bags<double>();
    for (Index j = 0; j < n; ++j) {
        const auto item = std::int64_t(1 + rng.below(8));
        data.features.sparse["item_id"].ids.push_back(item);
        bool seen = false;
        for (auto len = rng.below(5); len > 0; --len) {
            const auto h = std::int64_t(1 + rng.below(8));
            seen = seen || h == item;
            data.features.sparse["history"].ids.push_back(h);
        }
        data.features.sparse["user_id"].ids.push_back(std::int64_t(rng.below(5)));
        for (const char* f : {"item_id", "history", "user_id"})
            data.features.sparse[f].offsets.push_back(std::int64_t(data.features.sparse[f].ids.size()));
        data.labels(0, j) = seen ? 1.0 : 0.0;  // clicked what is in the history
        data.labels(1, j) = rng.uniform();
    }
    const Vector<double> before = model.input().attention_params().values();
    FitOptions o;
    o.epochs = 3;
    o.batch_size = 16;
    o.progress = Progress::silent;
    MultiTaskLoss<double> loss(model.tasks());
    fit(model, loss, data, nullptr, o);
    CHECK((model.input().attention_params().values() - before).cwiseAbs().maxCoeff() > 1e-4);
    CHECK(model.input().attention_params().grads().allFinite());
}

TEST_CASE("Attention features: bad specs and batches are refused, naming the feature", "[features][attention][errors]") {
    FeatureSpec s;
    s.add_table("items", 9, 3).add_table("users", 5, 2);
    s.add_feature("item_id", "items").add_attention_feature("history", "items", "nothing");
    CHECK_THROWS_WITH(FeatureInput<double>(s), Contains("feature 'history' attends to 'nothing', which is not an ID feature"));
    s.sparse[1].attention_target = "user_id";
    s.add_feature("user_id", "users");
    CHECK_THROWS_WITH(FeatureInput<double>(s), Contains("(dim 3) attends to 'user_id' of dim 2"));
    s.sparse[1].attention_target = "history";
    CHECK_THROWS_WITH(FeatureInput<double>(s), Contains("attends to 'history', which is pooled by attention itself"));
    s.sparse[1].attention_target = "item_id";
    s.sparse[1].attention_hidden = {0};
    CHECK_THROWS_WITH(FeatureInput<double>(s), Contains("attention_hidden widths must be positive, got 0"));
    s.sparse[1].attention_hidden = {4};
    s.sparse[0].attention_softmax = true;
    CHECK_THROWS_WITH(FeatureInput<double>(s), Contains("feature 'item_id' has attention settings but no attention_target"));

    FeatureInput<double> in(attention_features(false));
    FeatureBatch<double> batch = attention_batch();
    batch.sparse["history"] = Bags<double>::from_lengths({1, 2, 3, 4, 5, 6}, {5, 1, 0, 0, 0});
    CHECK_THROWS_WITH(in.forward(batch), Contains("feature 'history': sample 0 has 5 ids, more than its max_length 4"));
    batch.sparse["history"] = Bags<double>::from_lengths({1, 2}, {1, 1, 0, 0, 0}, {0.5, 2.0});
    CHECK_THROWS_WITH(in.forward(batch), Contains("'history' is pooled by attention and takes no per-id weights"));
}

TEMPLATE_TEST_CASE("PyTorch parity: an attention feature inside a FeatureModel, forward and every gradient", "[features][attention][parity]",
                   float, double) {
    // tools/make_feature_reference.py (case features_attention): the model file PyTorch wrote loads
    // here, and forward and backward of one batch compute what PyTorch computed.
    using T = TestType;
    const std::string tag = std::is_same_v<T, double> ? "f64" : "f32";
    const SafetensorsFile io = read_safetensors(moe::testing::fixture_path("features_attention_" + tag + "_io.safetensors"));
    FeatureBatch<T> batch;
    batch.dense = io.at("dense").batch<T>();
    for (const char* name : {"item_id", "recent_items", "user_id", "category", "history"}) {
        Bags<T>& b = batch.sparse[name];
        b.ids = io.at(std::string(name) + ".ids").values<std::int64_t>();
        b.offsets = io.at(std::string(name) + ".offsets").values<std::int64_t>();
    }
    batch.sparse["category"].weights = io.at("category.weights").values<T>();
    const Matrix<T> labels = io.at("labels").batch<T>();
    FeatureModel<MMoE<T>> model = load_feature_model<MMoE<T>>(moe::testing::fixture_path("features_attention_" + tag + ".safetensors"));
    REQUIRE(model.input().attentions() == 1);
    MultiTaskLoss<T> loss(model.tasks());
    model.train();
    const auto& out = model.forward(batch);
    const T l = loss.forward(out, labels);
    for (std::size_t t = 0; t < out.size(); ++t) MOE_CHECK_CLOSE(Matrix<T>(out[t]), io.at("out." + std::to_string(t)).batch<T>(), T);
    CHECK(std::abs(double(l) - double(io.at("loss").values<T>()[0])) <= moe::testing::parity_tolerance<T>());
    model.zero_grad();
    model.backward(loss.backward());
    auto check_grads = [&](const ParameterStore<T>& store, const std::string& prefix) {
        for (const auto& e : store.entries()) {
            INFO(prefix << e.name);
            const std::vector<T> expected = io.at("grad." + prefix + e.name).template values<T>();
            MOE_CHECK_CLOSE(Matrix<T>(store.grads().segment(e.offset, e.rows * e.cols)),
                            (Eigen::Map<const Matrix<T>>(expected.data(), Index(expected.size()), 1)), T);
        }
    };
    check_grads(model.params(), "");
    check_grads(model.input().attention_params(), "attention.");
    for (Index t = 0; t < model.input().tables(); ++t) {
        const std::string name = "tables." + model.input().spec().tables[std::size_t(t)].name + ".weight";
        INFO(name);
        MOE_CHECK_CLOSE(Matrix<T>(dense_grad_of(model.input().grad(t), model.input().table(t))), io.at("grad." + name).template batch<T>(), T);
    }
}

}  // namespace test_attention_features
