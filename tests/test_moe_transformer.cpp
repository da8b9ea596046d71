// MoETransformerLayer: PyTorch parity of a pre-norm layer with a dense feed-forward (LayerNorm) and
// with a top-2 SparseMoE (RMSNorm), causal and key-padded (tools/make_transformer_reference.py:
// outputs, dx, every parameter's gradient); gradient checks with the MoE's aux losses; bad specs.
#include <filesystem>
#include <fstream>
#include <vector>

#include "support/catch.hpp"
#include "support/fixtures.hpp"
#include "support/specs.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_moe_transformer {

using namespace moe;
using Catch::Matchers::Contains;

namespace {
MoETransformerLayerSpec layer_spec(bool moe) {
    MoETransformerLayerSpec s;
    s.dim = 8;
    s.heads = 2;
    s.ffn = 12;
    if (moe) {
        s.norm = NormKind::rms_norm;
        s.norm_eps = 1e-6;
        s.experts = 4;
        s.moe.k = 2;
    }
    return s;
}

/// The spec of a reference case of tools/make_transformer_reference.py.
MoETransformerLayerSpec case_spec(const std::string& n) {
    MoETransformerLayerSpec spec = layer_spec(n.rfind("moe", 0) == 0);
    if (n == "moe_shared") spec.shared_experts = 2;
    if (n == "dense_swiglu" || n == "moe_swiglu") spec.expert = ExpertKind::swiglu;
    if (n == "moe_swiglu") spec.shared_experts = 1;
    if (n == "moe_ec") {
        spec.moe.routing = Routing::expert_choice;
        spec.moe.capacity_factor = 2.0;
    }
    return spec;
}

/// The layer with its sequence length and padding bound: forward(x) and aux_loss as check_layer wants.
struct LayerOn {
    MoETransformerLayer<double>& m;
    Index seq;
    const std::vector<std::uint8_t>& pad;
    const MatrixView<double>& forward(const ConstView<double>& in) { return m.forward(in, seq, pad); }
    const MatrixView<double>& backward(const ConstView<double>& dy) { return m.backward(dy); }
    double aux_loss() const { return m.aux_loss(); }
    template <class F>
    void for_each_parameter(const std::string& p, F&& fn) {
        m.for_each_parameter(p, fn);
    }
};
}  // namespace

TEMPLATE_TEST_CASE("MoETransformerLayer matches a PyTorch pre-norm layer: dense, top-2 MoE, shared, SwiGLU and "
                   "expert-choice feed-forwards, and one AdamW step",
                   "[transformer][parity]", float, double) {
    using T = TestType;
    const SafetensorsFile f = read_safetensors(moe::testing::fixture_path(std::string("transformer_") +
                                                                          (std::is_same_v<T, double> ? "f64" : "f32") + ".safetensors"));
    std::vector<std::uint8_t> padding;
    for (std::int64_t v : f.at("padding").template values<std::int64_t>()) padding.push_back(std::uint8_t(v));
    for (const char* name : {"dense", "moe", "moe_shared", "dense_swiglu", "moe_swiglu", "moe_ec"}) {
        INFO(name);
        const std::string n = name;
        Model<MoETransformerLayer<T>> layer(case_spec(n));
        auto& store = layer.params();
        Index reference_params = 0;
        for (const auto& [key, tensor] : f.tensors) reference_params += key.rfind("param." + n + ".", 0) == 0;
        CHECK(reference_params == Index(store.entries().size()));
        for (const auto& e : store.entries()) store.value(e.name) = f.at("param." + n + "." + e.name).template matrix<T>();
        const Matrix<T> x = f.at(n + ".x").template batch<T>(), dy = f.at(n + ".dy").template batch<T>();
        layer.train();
        MOE_CHECK_CLOSE(Matrix<T>(layer.forward(x, 6, padding)), f.at(n + ".y").template batch<T>(), T);
        layer.zero_grad();
        MOE_CHECK_CLOSE(Matrix<T>(layer.backward(dy)), f.at(n + ".dx").template batch<T>(), T);
        for (const auto& e : store.entries()) {
            INFO(e.name);
            MOE_CHECK_CLOSE(Matrix<T>(store.grad(e.name)), f.at(n + ".grad." + e.name).template matrix<T>(), T);
        }
        AdamOptions o;
        o.lr = 0.01;
        o.weight_decay = 0.1;
        AdamW<T> adamw(o);
        adamw.step(store.values(), store.grads());
        for (const auto& e : store.entries()) {
            INFO(e.name << " after AdamW");
            Matrix<T> ours = store.value(e.name), theirs = f.at(n + ".after." + e.name).template matrix<T>();
            if (e.name == "attn.in_proj_bias") {
                // The key bias has a zero gradient in exact arithmetic (it adds q . b_k to all of a
                // query's scores, which the softmax ignores): both sides hold rounding noise there,
                // and Adam turns noise of either sign into a full step of +-lr. Compared: q and v.
                ours.middleRows(8, 8).setZero();
                theirs.middleRows(8, 8).setZero();
            }
            MOE_CHECK_CLOSE(ours, theirs, T);
        }
    }
}

TEST_CASE("MoETransformerLayer: gradients of dense and MoE layers, masks, the MoE's aux losses", "[transformer][gradcheck]") {
    const std::vector<std::uint8_t> padding = {0, 0, 0, 0, 0, 0, 1, 1};
    // dense, MoE, MoE with a shared expert, SwiGLU dense, SwiGLU MoE with a shared one, expert choice
    for (int variant : {0, 1, 2, 3, 4, 5}) {
        const bool moe = variant == 1 || variant == 2 || variant >= 4;
        INFO("variant " << variant);
        MoETransformerLayerSpec s = layer_spec(moe);
        if (variant == 2 || variant == 4) s.shared_experts = 1;
        if (variant == 3 || variant == 4) s.expert = ExpertKind::swiglu;
        if (variant == 5) {
            s.moe.routing = Routing::expert_choice;
            s.moe.capacity_factor = 1.5;
        }
        s.dim = 6;
        s.heads = 3;
        s.ffn = 5;
        s.moe.balance_coef = variant == 5 ? 0.0 : 0.05;  // expert choice takes the z-loss only
        s.moe.z_coef = 0.01;
        Model<MoETransformerLayer<double>> layer(s, 4);
        layer.train();
        LayerOn bound{layer, 4, padding};
        const auto r = moe::testing::check_layer(bound, layer.params(), moe::testing::random_matrix(6, 8, 9));
        INFO(r.report << "worst: " << r.worst);
        CHECK(r.max_error < 1e-6);
        if (moe) CHECK(layer.aux_loss() > 0);
    }
}

TEST_CASE("MoETransformerLayer: bad specs are refused naming the value", "[transformer][errors]") {
    MoETransformerLayerSpec s = layer_spec(false);
    s.heads = 3;
    CHECK_THROWS_WITH(MoETransformerLayer<double>(s), Contains("dim 8 is not divisible by heads 3"));
    s = layer_spec(true);
    s.moe.k = 5;
    CHECK_THROWS_AS(MoETransformerLayer<double>(s), config_error);
    s = layer_spec(false);
    s.ffn = 0;
    CHECK_THROWS_WITH(MoETransformerLayer<double>(s), Contains("ffn must be positive, got 0"));
    s = layer_spec(true);
    s.moe.capacity_factor = -1;
    CHECK_THROWS_AS(MoETransformerLayer<double>(s), config_error);
    s = layer_spec(false);
    s.shared_experts = 1;
    CHECK_THROWS_WITH(MoETransformerLayer<double>(s), Contains("shared_experts must be >= 0 and need routed experts"));
    s = layer_spec(true);
    s.moe.routing = Routing::expert_choice;
    CHECK_THROWS_WITH(MoETransformerLayer<double>(s), Contains("expert-choice routing needs capacity_factor > 0"));
    s.moe.capacity_factor = 2;
    s.moe.balance_coef = 0.01;
    CHECK_THROWS_WITH(MoETransformerLayer<double>(s), Contains("expert-choice routing is balanced by construction"));
    s.moe.balance_coef = 0;
    s.moe.noisy = true;
    CHECK_THROWS_WITH(MoETransformerLayer<double>(s), Contains("takes no router noise"));
}

}  // namespace test_moe_transformer

namespace test_moe_transformer {
namespace {
MoETransformerSpec lm_spec(bool tied) {
    MoETransformerSpec s;
    s.vocab = 7;
    s.max_positions = 5;
    s.layers = 2;
    s.tied_head = tied;
    s.layer = layer_spec(true);
    s.layer.dim = 6;
    s.layer.heads = 2;
    s.layer.ffn = 5;
    s.layer.experts = 3;
    s.layer.moe.balance_coef = 0.05;
    return s;
}
}  // namespace

TEST_CASE("MoETransformer: gradients of a 2-layer MoE language model through cross-entropy (causal, attention dropout "
          "fixed, aux losses), tied and untied head",
          "[transformer][gradcheck]") {
    const std::vector<std::int64_t> tokens = {1, 4, 2, 6, 0, 3, 3, 5, 1, 2};  // 2 sequences of 5
    Matrix<double> next(1, 10);
    for (Index t = 0; t < 10; ++t) next(0, t) = double(tokens[std::size_t((t + 1) % 10)]);
    for (bool tied : {false, true}) {
        INFO("tied " << tied);
        MoETransformerSpec spec = lm_spec(tied);
        spec.layer.attention_dropout = 0.2;
        spec.layer.moe.z_coef = 0.01;
        Model<MoETransformer<double>> lm(spec, 3);
        lm.train();
        CrossEntropyLoss<double> ce;
        auto f = [&] { return ce.forward(lm.forward(tokens, 5), next, ConstView<double>()) + lm.aux_loss(); };
        lm.zero_grad();
        f();
        lm.freeze_dropout(true);  // the gradient check's forwards reuse this forward's masks
        lm.backward(ce.backward());
        std::vector<moe::testing::Probe> probes;
        moe::testing::add_parameter_probes(lm, probes);
        const auto r = moe::testing::check_gradients(f, probes);
        INFO(r.report << "worst: " << r.worst);
        CHECK(r.max_error < 1e-6);
        CHECK(lm.params().contains("head.weight") == !tied);
        CHECK(lm.params().contains("layers.1.ffn.experts.2.0.weight"));
    }
}

TEST_CASE("MoETransformer: token ids outside the vocabulary and sequences longer than the positions are refused",
          "[transformer][errors]") {
    Model<MoETransformer<double>> lm(lm_spec(false), 1);
    const std::vector<std::int64_t> bad = {1, 7, 2, 0, 1}, six = {1, 2, 3, 4, 5, 6}, odd = {1, 2, 3};
    CHECK_THROWS_WITH(lm.forward(bad, 5), Contains("token 7 at position 1 is outside the vocabulary of 7"));
    CHECK_THROWS_WITH(lm.forward(six, 6), Contains("seq_len 6 is outside 1 ..5 (max_positions)"));
    CHECK_THROWS_WITH(lm.forward(odd, 2), Contains("3 tokens are not whole sequences of 2"));
    MoETransformerSpec s = lm_spec(false);
    s.vocab = 0;
    CHECK_THROWS_AS(MoETransformer<double>(s), config_error);
}

}  // namespace test_moe_transformer

namespace test_moe_transformer {
TEST_CASE("MoETransformer: decoding with the KV cache gives the full forward's logits at every position", "[transformer]") {
    for (bool moe_ffn : {false, true}) {
        INFO("moe " << moe_ffn);
        MoETransformerSpec s = lm_spec(false);
        if (!moe_ffn) s.layer.experts = 0;
        Model<MoETransformer<double>> lm(s, 8);
        lm.eval();
        const std::vector<std::int64_t> tokens = {1, 4, 2, 6, 0, 3, 3, 5, 1, 2};  // 2 sequences of 5
        const Matrix<double> full = lm.forward(tokens, 5);
        auto cache = lm.make_cache(2);
        for (Index t = 0; t < 5; ++t) {
            const std::vector<std::int64_t> next = {tokens[std::size_t(t)], tokens[std::size_t(5 + t)]};
            const Matrix<double> step = lm.decode(next, cache);
            INFO("position " << t);
            CHECK((step.col(0) - full.col(t)).cwiseAbs().maxCoeff() < 1e-12);
            CHECK((step.col(1) - full.col(5 + t)).cwiseAbs().maxCoeff() < 1e-12);
        }
        const std::vector<std::int64_t> one = {1, 2};
        CHECK_THROWS_WITH(lm.decode(one, cache), Contains("position 5 is beyond max_positions 5"));
        auto small = lm.make_cache(1);
        CHECK_THROWS_WITH(lm.decode(one, small), Contains("2 tokens for 1 sequences"));
    }
}
}  // namespace test_moe_transformer

namespace test_moe_transformer {
TEST_CASE("sample_token: greedy, temperature, top-p; bad settings", "[transformer][sampling]") {
    const Vector<double> logits = (Vector<double>(4) << 1.0, 3.0, 0.5, 2.0).finished();
    Rng rng(5);
    CHECK(sample_token(logits, {0.0, 1.0}, rng) == 1);
    CHECK(sample_token(logits, {1.0, 0.01}, rng) == 1);  // the nucleus is the top token alone
    // top_p 1: frequencies follow softmax(logits); top_p 0.8: only tokens 1 and 3 (0.64 + 0.24 >= 0.8).
    std::vector<int> all(4, 0), nucleus(4, 0);
    for (int i = 0; i < 20000; ++i) {
        ++all[std::size_t(sample_token(logits, {1.0, 1.0}, rng))];
        ++nucleus[std::size_t(sample_token(logits, {1.0, 0.8}, rng))];
    }
    const Vector<double> p = logits.array().exp() / logits.array().exp().sum();
    for (Index i = 0; i < 4; ++i) CHECK(std::abs(all[std::size_t(i)] / 20000.0 - p(i)) < 0.015);
    CHECK(nucleus[0] == 0);
    CHECK(nucleus[2] == 0);
    CHECK(std::abs(nucleus[1] / 20000.0 - p(1) / (p(1) + p(3))) < 0.015);
    CHECK_THROWS_WITH(sample_token(logits, {-1.0, 1.0}, rng), Contains("temperature must be finite and >= 0"));
    CHECK_THROWS_WITH(sample_token(logits, {1.0, 0.0}, rng), Contains("top_p must be in (0, 1], got 0"));
    Vector<double> nan = logits;
    nan(2) = std::nan("");
    CHECK_THROWS_WITH(sample_token(nan, {1.0, 1.0}, rng), Contains("logit 2 is NaN"));
    Vector<double> inf = logits;
    inf(2) = INFINITY;
    inf(0) = -INFINITY;
    for (int i = 0; i < 20; ++i) CHECK(sample_token(inf, {1.0, 1.0}, rng) == 2);
    inf(2) = 1.0;
    for (int i = 0; i < 200; ++i) CHECK(sample_token(inf, {1.0, 1.0}, rng) != 0);  // -inf: never
    CHECK_THROWS_WITH(sample_token(Vector<double>::Constant(3, -INFINITY), {1.0, 1.0}, rng), Contains("every logit is -inf"));
}
}  // namespace test_moe_transformer

namespace test_moe_transformer {

namespace {
/// The specs of tools/make_transformer_reference.py's language models (LM_CASES).
MoETransformerSpec reference_lm_spec(bool moe) {
    MoETransformerSpec s;
    s.vocab = 11;
    s.max_positions = 8;
    s.layers = 2;
    s.tied_head = !moe;
    s.layer = case_spec(moe ? "moe_swiglu" : "dense");
    return s;
}
}  // namespace

TEST_CASE("MoETransformer model files: PyTorch's state_dict loads and gives its logits; save and load round-trip with PyTorch "
          "shapes",
          "[transformer][io]") {
    for (bool moe : {true, false}) {
        INFO("moe " << moe);
        const std::string name = moe ? "moe" : "dense";
        const SafetensorsFile expected = read_safetensors(moe::testing::fixture_path("transformer_lm_" + name + "_expected.safetensors"));
        const std::vector<std::int64_t> tokens = expected.at("tokens").values<std::int64_t>();
        auto lm = load_state_dict<MoETransformer<double>>(moe::testing::fixture_path("transformer_lm_" + name + ".safetensors"),
                                                          reference_lm_spec(moe));
        // PyTorch's logits (2, 7, 11) row-major are ours (11 x 14) column-major: the same flat order.
        const std::vector<double> want = expected.at("logits").values<double>();
        const Matrix<double> ours = lm.forward(tokens, 7);
        const Matrix<double> theirs = Eigen::Map<const Matrix<double>>(want.data(), 11, 14);
        MOE_CHECK_CLOSE(ours, theirs, double);

        const std::string path = (std::filesystem::temp_directory_path() / ("moe_test_transformer_" + name + ".safetensors")).string();
        save(lm, path);
        const SafetensorsFile file = read_safetensors(path);
        CHECK(file.metadata.at("kind") == "moe_transformer");
        CHECK(file.at("layers.0.norm1.weight").shape == std::vector<std::int64_t>{8});  // 1-D, as PyTorch's
        CHECK(file.at("layers.1.attn.in_proj_bias").shape == std::vector<std::int64_t>{24});
        CHECK(file.at("layers.0.attn.in_proj_weight").shape == std::vector<std::int64_t>{24, 8});
        CHECK(file.at("tok_emb.weight").shape == std::vector<std::int64_t>{11, 8});
        if (moe) CHECK(file.at("layers.0.ffn.experts.3.w2.weight").shape == std::vector<std::int64_t>{8, 12});
        auto back = load<MoETransformer<double>>(path);
        CHECK(back.spec().layer.expert == lm.spec().layer.expert);
        CHECK(Matrix<double>(back.forward(tokens, 7)) == ours);
        std::filesystem::remove(path);
    }
}

TEST_CASE("MoETransformer model files: a bad config is refused naming the file and the field", "[transformer][io][errors]") {
    Model<MoETransformer<float>> lm(reference_lm_spec(true), 1);
    const std::string path = (std::filesystem::temp_directory_path() / "moe_test_transformer_bad.safetensors").string();
    save(lm, path);
    SafetensorsFile file = read_safetensors(path);
    auto with_config = [&](const std::string& from, const std::string& to) {
        SafetensorsFile f = file;
        auto& c = f.metadata.at("config");
        const auto at = c.find(from);
        REQUIRE(at != std::string::npos);
        c.replace(at, from.size(), to);
        write_safetensors(path, f);
    };
    with_config("\"norm\":\"rms_norm\"", "\"norm\":\"batch_norm\"");
    CHECK_THROWS_WITH(load<MoETransformer<float>>(path), Contains("config.layer.norm: unknown norm 'batch_norm'"));
    with_config("\"routing\":\"top_k\"", "\"routing\":\"tokens_choose\"");
    CHECK_THROWS_WITH(load<MoETransformer<float>>(path), Contains("config.layer.moe.routing: unknown routing 'tokens_choose'"));
    with_config("\"vocab\":11", "\"vocab\":110000000");
    CHECK_THROWS_WITH(load<MoETransformer<float>>(path), Contains("the config describes a model of"));
    with_config("\"heads\":2", "\"heads\":3");
    CHECK_THROWS_WITH(load<MoETransformer<float>>(path), Contains("dim 8 is not divisible by heads 3"));
    std::filesystem::remove(path);
}

}  // namespace test_moe_transformer
