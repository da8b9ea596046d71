// Model files, continued: realistic sizes of every kind in both dtypes (the exact size check), the
// strict config reader (every integer field, defaults), a file written before the spec-JSON rework,
// evaluation mode after loading, and loading one's own PyTorch state_dict with rename rules.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/resource.h>

#include "support/catch.hpp"
#include "support/fixtures.hpp"
#include "support/model_files.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_model_file_compat {

using namespace moe;
using Catch::Matchers::Contains;
using namespace moe::testing;


namespace {
/// The census configs of the README at their real sizes, and a big SparseMoE without noise.
PLESpec census_ple(int levels) {
    PLESpec s;
    s.input = 535;
    s.levels = {PLELevelSpec{4, 2, {}, 16}};
    if (levels > 1) s.levels.push_back(PLELevelSpec{2, 1, {}, 16});
    s.tower_hidden = {8};
    s.tasks = {binary_task("income"), binary_task("marital")};
    return s;
}
MMoESpec census_mmoe() {
    MMoESpec s;
    s.input = 535;
    s.experts = 8;
    s.expert_dim = 16;
    s.tower_hidden = {8};
    s.tasks = {binary_task("income"), binary_task("marital")};
    s.batchnorm = true;
    return s;
}
SparseMoESpec big_sparse(bool noisy, bool bias) {
    SparseMoESpec s;
    s.dim = 64;
    s.ffn = 128;
    s.experts = 16;
    s.k = 2;
    s.noisy = noisy;
    s.router_bias = bias;
    return s;
}

/// Element count of every tensor the model writes.
template <class M>
double written_values(Model<M>& model) {
    double n = 0;
    for (const auto& [name, slot] : detail::model_tensors(model)) {
        (void)name;
        double e = 1;
        for (auto d : slot.shape) e *= double(d);
        n += e;
    }
    return n;
}

template <class M>
void check_size_exact(const typename M::Spec& spec) {
    Model<M> model(spec, 1);
    CHECK(detail::model_values(spec) == written_values(model));
}

/// Round trip in both dtypes, with and without optimizer state.
template <template <class> class M>
void round_trip_both(const typename M<float>::Spec& spec, const std::string& path) {
    for (bool with_adam : {false, true}) {
        INFO("optimizer state " << with_adam);
        Model<M<float>> m32(spec, 5);
        Model<M<double>> m64(spec, 5);
        Adam<float> a32;
        Adam<double> a64;
        save(m32, path + "32", with_adam ? &a32 : nullptr);
        save(m64, path + "64", with_adam ? &a64 : nullptr);
        CHECK(load<M<float>>(path + "32").params().values() == m32.params().values());
        CHECK(load<M<double>>(path + "64").params().values() == m64.params().values());
    }
}
}  // namespace

TEST_CASE("Model files: realistic sizes of every kind round-trip in both dtypes; the size check is exact",
          "[io][model_file]") {
    TempDir dir("model_file_sizes");
    // These failed to load in float32 before the size check was made exact (PLE counted a shared
    // gate on its last level, SparseMoE always counted noise and router bias, 4 bytes per value).
    round_trip_both<PLE>(census_ple(2), dir.file("ple"));
    round_trip_both<CGC>(census_ple(1), dir.file("cgc"));
    round_trip_both<MMoE>(census_mmoe(), dir.file("mmoe"));
    round_trip_both<SparseMoE>(big_sparse(false, false), dir.file("sparse"));
    round_trip_both<SparseMoE>(big_sparse(true, true), dir.file("sparse_noisy"));
    SharedBottomSpec sb = bottom_spec();
    sb.input = 535;
    sb.bottom_hidden = {128};
    round_trip_both<SharedBottom>(sb, dir.file("sb"));
    // The count the loader checks before building equals what the built model writes, for every kind.
    check_size_exact<PLE<float>>(census_ple(2));
    check_size_exact<PLE<float>>(ple_spec(2));
    check_size_exact<CGC<float>>(census_ple(1));
    check_size_exact<MMoE<float>>(census_mmoe());
    check_size_exact<MMoE<float>>(mmoe_spec());
    check_size_exact<OMoE<float>>(mmoe_spec(true));
    check_size_exact<SharedBottom<float>>(bottom_spec());
    check_size_exact<SparseMMoE<float>>(sparse_mmoe_spec());
    MMoESpec dselect = census_mmoe();
    dselect.gate = GateKind::dselect_k;
    dselect.dselect_k = 3;
    check_size_exact<MMoE<float>>(dselect);
    for (bool noisy : {false, true})
        for (bool bias : {false, true}) check_size_exact<SparseMoE<float>>(big_sparse(noisy, bias));
}

namespace {
/// Every field of a spec (nested: tasks[0].classes, levels[0].expert_dim) whose C++ type is an integer.
template <class Spec>
std::vector<nlohmann::json::json_pointer> integer_fields(const Spec& spec) {
    std::vector<nlohmann::json::json_pointer> out;
    const nlohmann::json j = detail::spec_to_json(spec);
    detail::visit_fields(spec, [&](const char* name, const auto& member) {
        using V = std::decay_t<decltype(member)>;
        if constexpr (std::is_same_v<V, Index>) out.emplace_back(std::string("/") + name);
    });
    if (j.contains("tasks")) out.emplace_back("/tasks/0/classes");
    if (j.contains("levels"))
        for (const char* f : {"shared_experts", "task_experts", "expert_dim"}) out.emplace_back(std::string("/levels/0/") + f);
    if (j.contains("expert_hidden")) out.emplace_back("/expert_hidden/0");
    return out;
}

template <class M>
void check_integer_fields(Model<M>& model, const std::string& path) {
    save(model, path);
    const SafetensorsFile good = read_safetensors(path);
    const nlohmann::json config = nlohmann::json::parse(good.metadata.at("config"));
    for (const auto& field : integer_fields(model.spec())) {
        for (const nlohmann::json& bad : {nlohmann::json(4.7), nlohmann::json(1e300), nlohmann::json(-1e300),
                                          nlohmann::json(std::uint64_t(1) << 63), nlohmann::json("4")}) {
            INFO(field.to_string() << " = " << bad.dump());
            SafetensorsFile f = good;
            nlohmann::json c = config;
            c[field] = bad;
            f.metadata["config"] = c.dump();
            write_safetensors(path + ".bad", f);
            std::string error;
            try {
                load<M>(path + ".bad");
            } catch (const io_error& e) {
                error = e.what();
            }
            // "/tasks/0/classes" is reported as "config.tasks[0].classes".
            std::string name = "config";
            std::stringstream tokens(field.to_string().substr(1));
            for (std::string tok; std::getline(tokens, tok, '/');)
                name += std::isdigit(static_cast<unsigned char>(tok[0])) ? "[" + tok + "]" : "." + tok;
            CHECK_THAT(error, Contains(name + ": "));
        }
    }
}
}  // namespace

TEST_CASE("Model files: every integer field of every spec must hold an integer in range", "[io][model_file][errors]") {
    TempDir dir("model_file_integers");
    Model<MMoE<double>> mmoe(mmoe_spec(), 1);
    check_integer_fields(mmoe, dir.file("mmoe"));
    Model<SharedBottom<double>> sb(bottom_spec(), 1);
    check_integer_fields(sb, dir.file("sb"));
    Model<PLE<double>> ple(ple_spec(2), 1);
    check_integer_fields(ple, dir.file("ple"));
    Model<SparseMMoE<double>> smmoe(sparse_mmoe_spec(), 1);
    check_integer_fields(smmoe, dir.file("smmoe"));
    Model<SparseMoE<double>> layer(big_sparse(true, true), 1);
    check_integer_fields(layer, dir.file("sparse"));
    // The message names the field and the value.
    SafetensorsFile f = read_safetensors(dir.file("mmoe"));
    auto config_of = [](const std::string& path) { return nlohmann::json::parse(read_safetensors(path).metadata.at("config")); };
    auto c = config_of(dir.file("mmoe"));
    c["tasks"][1]["kind"] = "ranking";
    f.metadata["config"] = c.dump();
    write_safetensors(dir.file("kind.bad"), f);
    CHECK_THROWS_WITH(load<MMoE<double>>(dir.file("kind.bad")),
                      Contains("config.tasks[1].kind: unknown task kind 'ranking'"));
    c = config_of(dir.file("mmoe"));  // the good config again: one error per file
    c["experts"] = 4.7;
    f.metadata["config"] = c.dump();
    write_safetensors(dir.file("float.bad"), f);
    CHECK_THROWS_WITH(load<MMoE<double>>(dir.file("float.bad")), Contains("config.experts: expected an integer, got the number 4.7"));
}

TEST_CASE("Model files: a hand-written config lists only what differs from the spec's defaults", "[io][model_file]") {
    TempDir dir("model_file_defaults");
    MMoESpec s;
    s.input = 4;
    s.experts = 2;
    s.expert_dim = 3;
    s.tasks = {binary_task("click")};
    Model<MMoE<float>> model(s, 3);
    save(model, dir.file("m.safetensors"));
    SafetensorsFile f = read_safetensors(dir.file("m.safetensors"));
    f.metadata["config"] = R"({"input": 4, "experts": 2, "expert_dim": 3, "tasks": [{"name": "click"}]})";
    write_safetensors(dir.file("short.safetensors"), f);
    const auto back = load<MMoE<float>>(dir.file("short.safetensors"));
    CHECK(back.params().values() == model.params().values());
    CHECK(back.spec().activation == ActivationKind::relu);
    CHECK(back.tasks()[0].kind == TaskKind::binary);
}

TEST_CASE("Model files: a file written before the spec JSON rework still loads and predicts the same",
          "[io][model_file]") {
    // Written by moe::save of the library as it was on 2026-11-23 (git 9cdc4ae), with Adam state.
    Adam<float> adam;
    const auto mmoe = load<MMoE<float>>(moe::testing::fixture_path("main_2026_11_23_mmoe_f32") + ".safetensors", {}, &adam);
    CHECK(adam.step_count() == 3);
    const SafetensorsFile io = read_safetensors(moe::testing::fixture_path("main_2026_11_23_mmoe_f32_io") + ".safetensors");
    const Matrix<float> x = io.at("x").batch<float>();
    InferenceWorkspace<float> ws;
    const auto& pred = mmoe.predict(x, ws);
    // The same bits on the backend that wrote it (Eigen); another GEMM rounds differently.
    for (std::size_t t = 0; t < pred.size(); ++t) {
        if (std::string(detail::gemm_backend()) == "eigen") CHECK(Matrix<float>(pred[t]) == io.at("pred." + std::to_string(t)).batch<float>());
        else MOE_CHECK_CLOSE(Matrix<float>(pred[t]), io.at("pred." + std::to_string(t)).batch<float>(), float);
    }
    CHECK_NOTHROW(load<PLE<double>>(moe::testing::fixture_path("main_2026_11_23_ple_f64") + ".safetensors"));
    CHECK(load<SparseMoE<float>>(moe::testing::fixture_path("main_2026_11_23_sparse_moe_f32") + ".safetensors").spec().noisy);
}

TEST_CASE("Model files: a loaded model serves in evaluation mode, and a const model saves", "[io][model_file]") {
    TempDir dir("model_file_eval");
    Model<MMoE<double>> model(mmoe_spec(), 1);
    Adam<double> adam;
    train_a_little(model, adam, 2, 3);
    const Model<MMoE<double>>& const_model = model;
    save(const_model, dir.file("m.safetensors"));
    Model<MMoE<double>> back = load<MMoE<double>>(dir.file("m.safetensors"));
    const Matrix<double> x = random_matrix(6, 5, 1);
    // forward() without eval(): evaluation semantics (running statistics), which it leaves unchanged.
    InferenceWorkspace<double> ws;
    const auto& pred = back.predict(x, ws);
    const auto& logits = back.forward(x);
    CHECK((Matrix<double>(logits[1]).cwiseMax(0.0) - Matrix<double>(pred[1])).cwiseAbs().maxCoeff() < 1e-12);
    CHECK(load<MMoE<double>>(dir.file("m.safetensors")).params().values() == back.params().values());
    Model<MMoE<double>> again = load<MMoE<double>>(dir.file("m.safetensors"));
    again.forward(x);
    save(again, dir.file("after_forward.safetensors"));
    CHECK(read_bytes(dir.file("after_forward.safetensors")) == read_bytes(dir.file("m.safetensors")));
}

TEMPLATE_TEST_CASE("Model files: one's own PyTorch MMoE (tutorial-style classes) loads with rename rules",
                   "[io][model_file][parity]", float, double) {
    using T = TestType;
    const std::string base = moe::testing::fixture_path(std::string("tutorial_mmoe_") + (std::is_same_v<T, float> ? "f32" : "f64"));
    // The spec that describes tools/make_tutorial_mmoe.py's module (docs/model_files.md walks through it).
    MMoESpec spec;
    spec.input = 12;
    spec.experts = 4;
    spec.expert_hidden = {16};
    spec.expert_dim = 8;
    spec.tower_hidden = {6};
    spec.batchnorm = true;
    spec.tower_dropout = 0.1;
    spec.tasks = {binary_task("click"), regression_task("watch", /*relu_output=*/true)};
    LoadOptions options;
    options.renames = {{R"(^experts\.(\d+)\.net\.)", "experts.$1."},
                       {R"(^gates\.(\d+)\.gate\.0\.)", "gates.$1."},
                       {R"(^towers\.(\d+)\.tower\.)", "towers.$1."}};
    const auto model = load_state_dict<MMoE<T>>(base + ".safetensors", spec, options);
    const SafetensorsFile io = read_safetensors(base + "_io.safetensors");
    InferenceWorkspace<T> ws;
    const auto& pred = model.predict(io.at("x").template batch<T>(), ws);
    for (std::size_t t = 0; t < 2; ++t)
        MOE_CHECK_CLOSE(Matrix<T>(pred[t]), io.at("pred." + std::to_string(t)).template batch<T>(), T);

    // Without the rules: the missing name, what the file holds, and the closest name.
    CHECK_THROWS_WITH(load_state_dict<MMoE<T>>(base + ".safetensors", spec),
                      Contains("tensor 'experts.0.0.bias' is missing (the file holds") &&
                          Contains("the closest is 'experts.0.net.0.bias'"));
    // Rules that merge two names, and a pattern that is not a regex.
    LoadOptions merging;
    merging.renames = {{R"(\.net\.\d+)", ".x"}};
    CHECK_THROWS_WITH(load_state_dict<MMoE<T>>(base + ".safetensors", spec, merging), Contains("the rename rules turn both"));
    LoadOptions broken;
    broken.renames = {{"experts.(", "x"}};
    CHECK_THROWS_AS(load_state_dict<MMoE<T>>(base + ".safetensors", spec, broken), config_error);
    // A spec that does not fit the file: the shape error names the tensor.
    MMoESpec wrong = spec;
    wrong.expert_dim = 9;
    CHECK_THROWS_WITH(load_state_dict<MMoE<T>>(base + ".safetensors", wrong, options), Contains("tensor 'experts.0.3.bias' has shape [8], the model needs [9]"));
}

}  // namespace test_model_file_compat
