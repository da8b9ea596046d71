#pragma once
// What the model-file tests share: small specs of every kind (with batchnorm, all task kinds), a few
// training steps, predictions, and raw file bytes.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support/catch.hpp"
#include "support/gradcheck.hpp"
#include "support/model_checks.hpp"
#include "support/temp_dir.hpp"

namespace moe::testing {
namespace fs = std::filesystem;

inline std::string read_bytes(const std::string& path) {
    std::string b(static_cast<std::size_t>(fs::file_size(path)), '\0');
    std::ifstream(path, std::ios::binary).read(b.data(), static_cast<std::streamsize>(b.size()));
    return b;
}
inline void write_bytes(const std::string& path, const std::string& b) { std::ofstream(path, std::ios::binary) << b; }

inline std::vector<TaskSpec> tasks3() { return {binary_task("click"), regression_task("watch", true), multiclass_task("rating", 3)}; }

inline MMoESpec mmoe_spec(bool shared_gate = false) {
    MMoESpec s;
    s.input = 6;
    s.experts = 3;
    s.expert_hidden = {5};
    s.expert_dim = 4;
    s.gate_hidden = shared_gate ? std::vector<Index>{} : std::vector<Index>{3};
    s.tower_hidden = {3};
    s.tasks = tasks3();
    s.batchnorm = true;
    s.shared_gate = shared_gate;
    return s;
}
inline SharedBottomSpec bottom_spec() {
    SharedBottomSpec s;
    s.input = 6;
    s.bottom_hidden = {7};
    s.bottom_dim = 5;
    s.tower_hidden = {3};
    s.tasks = tasks3();
    s.batchnorm = true;
    return s;
}
inline PLESpec ple_spec(int levels) {
    PLESpec s;
    s.input = 6;
    s.levels = {PLELevelSpec{2, 1, {5}, 4}};
    if (levels > 1) s.levels.push_back(PLELevelSpec{1, 2, {}, 3});
    s.tower_hidden = {3};
    s.tasks = tasks3();
    s.batchnorm = true;
    return s;
}
inline SparseMMoESpec sparse_mmoe_spec() {
    SparseMMoESpec s;
    static_cast<MMoESpec&>(s) = mmoe_spec();
    s.batchnorm = false;
    s.gate_hidden = {};
    s.k = 2;
    return s;
}

/// A few training steps so that every parameter and BatchNorm statistic has moved from its init.
template <class M>
void train_a_little(Model<M>& model, Adam<typename M::Scalar>& adam, int steps, std::uint64_t seed) {
    using T = typename M::Scalar;
    MultiTaskLoss<T> loss(model.tasks());
    const Matrix<T> x = random_matrix(model.in_features(), 16, seed).template cast<T>();
    const Matrix<T> y = moe::testing::labels_for(model.tasks(), 16, seed + 1).template cast<T>();
    model.train();
    for (int i = 0; i < steps; ++i) {
        model.zero_grad();
        loss.forward(model.forward(x), y);
        model.backward(loss.backward());
        adam.step(model.params());
    }
    model.eval();
}

template <class M>
std::vector<Matrix<typename M::Scalar>> predictions(const Model<M>& model) {
    using T = typename M::Scalar;
    const Matrix<T> x = random_matrix(model.in_features(), 9, 99).template cast<T>();
    InferenceWorkspace<T> ws;
    const auto& p = model.predict(x, ws);
    return std::vector<Matrix<T>>(p.begin(), p.end());
}

template <class M>
void check_round_trip(const typename M::Spec& spec, const std::string& path) {
    using T = typename M::Scalar;
    Model<M> model(spec, 3);
    Adam<T> adam;
    train_a_little(model, adam, 3, 5);
    save(model, path);
    const Model<M> back = load<M>(path);
    CHECK(back.params().values() == model.params().values());  // bitwise
    const auto a = predictions(model), b = predictions(back);
    for (std::size_t t = 0; t < a.size(); ++t) CHECK(a[t] == b[t]);
    // With the optimizer state: the same parameters, and Adam's moments and step come back exactly.
    save(model, path + ".opt", &adam);
    Adam<T> adam_back;
    const Model<M> back_opt = load<M>(path + ".opt", {}, &adam_back);
    CHECK(back_opt.params().values() == model.params().values());
    CHECK(adam_back.step_count() == adam.step_count());
    CHECK(adam_back.first_moment() == adam.first_moment());
    CHECK(adam_back.second_moment() == adam.second_moment());
}

/// The tensors of a saved file, to edit into bad files.
inline SafetensorsFile saved_mmoe(const std::string& path) {
    Model<MMoE<double>> model(mmoe_spec(), 1);
    Adam<double> adam;
    train_a_little(model, adam, 2, 3);
    save(model, path);
    return read_safetensors(path);
}

}  // namespace moe::testing
