// PyTorch parity of the multi-task models: outputs, losses, activations, every gradient and one Adam
// step, on the shared reference cases (../shared/reference/) and on our own (tools/make_mmoe_reference.py).
#include <filesystem>

#include <nlohmann/json.hpp>

#include "support/catch.hpp"
#include "support/fixtures.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_parity_models {

using namespace moe;
using json = nlohmann::json;

namespace {

// json::value() trips GCC 12's -Wnull-dereference inside nlohmann; find() does not.
template <class V>
V optional_value(const json& j, const char* key, V fallback) {
    const auto it = j.find(key);
    return it == j.end() ? fallback : it->template get<V>();
}

std::vector<Index> widths(const json& j) {
    if (j.is_null()) return {};
    if (j.is_number()) return {j.get<Index>()};
    return j.get<std::vector<Index>>();
}

struct Case {
    json cfg;
    SafetensorsFile file;
    std::vector<TaskSpec> tasks;
    std::vector<TaskLoss> losses;
};

Case load_case(const std::string& path) {
    Case c;
    c.file = read_safetensors(path);
    c.cfg = json::parse(c.file.metadata.at("config"));
    const json tasks = c.cfg.contains("tasks") ? c.cfg.at("tasks") : json::parse(c.file.metadata.at("tasks"));
    for (std::size_t k = 0; k < tasks.size(); ++k) {
        const json& t = tasks[k];
        const std::string kind = t.at("kind").get<std::string>(), name = "task" + std::to_string(k);
        const bool relu = optional_value(t, "relu_output", false);
        if (kind == "bin") c.tasks.push_back(binary_task(name)), c.losses.push_back({});
        else if (kind == "mse") c.tasks.push_back(regression_task(name, relu)), c.losses.push_back({});
        else if (kind == "huber") c.tasks.push_back(regression_task(name, relu)), c.losses.push_back({LossKind::huber, 1.0, t.at("delta").get<double>()});
        else if (kind == "ce") c.tasks.push_back(multiclass_task(name, t.at("classes").get<Index>())), c.losses.push_back({});
        else FAIL("unknown task kind " << kind);
    }
    return c;
}

MMoESpec mmoe_spec(const Case& c) {
    MMoESpec s;
    s.input = c.cfg.at("input_dim");
    s.experts = c.cfg.at("experts");
    s.expert_hidden = widths(c.cfg.at("expert_hidden"));
    s.expert_dim = c.cfg.at("expert_dim");
    s.gate_hidden = widths(optional_value(c.cfg, "gate_hidden", json::array()));
    if (optional_value(c.cfg, "gate", std::string("softmax")) == "dselect_k") {
        s.gate = GateKind::dselect_k;
        s.dselect_k = c.cfg.at("dselect_k");
        s.dselect_gamma = c.cfg.at("dselect_gamma");
        s.dselect_entropy = c.cfg.at("dselect_entropy");
    }
    s.tower_hidden = widths(c.cfg.at("tower_hidden"));
    s.tasks = c.tasks;
    s.batchnorm = optional_value(c.cfg, "batchnorm", false);
    s.surfaces = optional_value(c.cfg, "surfaces", Index(1));
    return s;
}

SharedBottomSpec bottom_spec(const Case& c) {
    SharedBottomSpec s;
    s.input = c.cfg.at("input_dim");
    s.bottom_hidden = widths(c.cfg.at("bottom_hidden"));
    s.bottom_dim = c.cfg.at("bottom_dim");
    s.tower_hidden = widths(c.cfg.at("tower_hidden"));
    s.tasks = c.tasks;
    s.batchnorm = optional_value(c.cfg, "batchnorm", false);
    s.surfaces = optional_value(c.cfg, "surfaces", Index(1));
    return s;
}

PLESpec ple_spec(const Case& c) {
    PLESpec s;
    s.input = c.cfg.at("input_dim");
    for (const json& l : c.cfg.at("levels"))
        s.levels.push_back(PLELevelSpec{l.at("shared_experts").get<Index>(), l.at("task_experts").get<Index>(),
                                        widths(l.at("expert_hidden")), l.at("expert_dim").get<Index>()});
    s.tower_hidden = widths(c.cfg.at("tower_hidden"));
    s.tasks = c.tasks;
    s.batchnorm = optional_value(c.cfg, "batchnorm", false);
    s.surfaces = optional_value(c.cfg, "surfaces", Index(1));
    return s;
}

template <class T, class M>
void check_case(Model<M>& model, const Case& c) {
    const SafetensorsFile& f = c.file;
    auto& store = model.params();
    for (const auto& e : store.entries()) store.value(e.name) = f.at(e.name).template matrix<T>();
    const Matrix<T> x = f.at("input.x").template batch<T>();
    const Index n_tasks = static_cast<Index>(c.tasks.size()), batch = x.cols();
    Matrix<T> labels(n_tasks, batch), mask = Matrix<T>::Ones(n_tasks, batch);
    bool masked = false;
    for (Index k = 0; k < n_tasks; ++k) {
        labels.row(k) = f.at("label." + std::to_string(k)).template batch<T>();
        if (f.tensors.count("mask." + std::to_string(k))) {
            mask.row(k) = f.at("mask." + std::to_string(k)).template batch<T>();
            masked = true;
        }
    }
    if (!masked) mask.resize(0, 0);
    std::vector<Index> surfaces;  // tower trees: each sample's surface
    if (f.contains("input.surface"))
        for (T v : f.at("input.surface").template values<T>()) surfaces.push_back(Index(v));

    MultiTaskLoss<T> loss(c.tasks, c.losses);
    model.train();
    model.zero_grad();
    const auto& out = surfaces.empty() ? model.forward(x) : model.forward(x, surfaces);
    T total = loss.forward(out, labels, mask);
    if constexpr (moe::detail::has_aux_loss<M>::value) {
        if (f.contains("loss.aux")) {
            MOE_CHECK_CLOSE((Matrix<T>::Constant(1, 1, T(model.aux_loss()))), f.at("loss.aux").template matrix<T>(), T);
            total += T(model.aux_loss());
        }
    }
    for (Index k = 0; k < n_tasks; ++k) {
        const std::string key = "output." + std::to_string(k);
        INFO("task " << k);
        MOE_CHECK_CLOSE(Matrix<T>(out[std::size_t(k)]), f.at(key + ".logit").template batch<T>(), T);
        Buffer<T> pred;
        Tower<T>::apply_head(c.tasks[std::size_t(k)], out[std::size_t(k)], pred);
        MOE_CHECK_CLOSE(Matrix<T>(pred.view()), f.at(key + ".pred").template batch<T>(), T);
        MOE_CHECK_CLOSE((Matrix<T>::Constant(1, 1, loss.task_loss(std::size_t(k)))),
                        f.at("loss." + std::to_string(k)).template matrix<T>(), T);
    }
    MOE_CHECK_CLOSE((Matrix<T>::Constant(1, 1, total)), f.at("loss.total").template matrix<T>(), T);

    if constexpr (std::is_base_of_v<MMoE<T>, M>) {
        const auto& o = model.last_expert_outputs();  // (E D) x B is the (B, E, D) tensor's bytes
        const auto ref = f.at("act.expert_out").template values<T>();
        MOE_CHECK_CLOSE(Matrix<T>(o), (Eigen::Map<const Matrix<T>>(ref.data(), o.rows(), o.cols())), T);
        const auto& p = model.last_gate_probabilities();
        const Index e = model.experts();
        for (Index g = 0; g < model.gates(); ++g) {
            INFO("gate " << g);
            MOE_CHECK_CLOSE(Matrix<T>(p.middleRows(g * e, e)), f.at("act.gate." + std::to_string(g)).template batch<T>(), T);
        }
    }

    model.backward(loss.backward());
    for (const auto& e : store.entries()) {
        INFO("grad." << e.name);
        MOE_CHECK_CLOSE(Matrix<T>(store.grad(e.name)), f.at("grad." + e.name).template matrix<T>(), T);
    }
    const Vector<T> before = store.values();
    Adam<T> adam(AdamOptions{});
    adam.step(store);
    for (const auto& e : store.entries()) {
        INFO("adam1." << e.name);
        Matrix<T> ours = store.value(e.name), ref = f.at("adam1." + e.name).template matrix<T>();
        // A gradient that is exactly zero in exact arithmetic (a bias before a BatchNorm whose ReLU is
        // active on the whole batch) comes out as round-off, ~1e-8 in float32, and Adam's first step
        // moves by lr * sign(g) whatever |g| is: both sides move by +-lr on noise. There we check the
        // step's bound |dp| <= lr instead of its sign (round-off is ~1e-16 in float64).
        const Matrix<T> g = f.at("grad." + e.name).template matrix<T>();
        const Matrix<T> p0 = ParamView<T>(const_cast<T*>(before.data()) + e.offset, e.rows, e.cols);
        const T noise = std::is_same_v<T, float> ? T(1e-5) : T(1e-12);
        for (Index i = 0; i < g.size(); ++i)
            if (std::abs(g.data()[i]) < noise) {
                CHECK(std::abs(ours.data()[i] - p0.data()[i]) <= T(1e-3) * T(1.0001));
                ours.data()[i] = ref.data()[i];
            }
        MOE_CHECK_CLOSE(ours, ref, T);
    }
    // Every parameter of the reference is one of ours and the other way round.
    Index reference_params = 0;
    for (const auto& kv : f.tensors) reference_params += kv.first.rfind("grad.", 0) == 0;
    CHECK(reference_params == static_cast<Index>(store.entries().size()));
}

template <class T>
void run_file(const std::string& path) {
    INFO(path);
    const Case c = load_case(path);
    const std::string kind = c.cfg.contains("model") ? c.cfg.at("model").get<std::string>() : std::string("mmoe");
    if (kind == "shared_bottom") {
        Model<SharedBottom<T>> m(bottom_spec(c));
        check_case<T>(m, c);
    } else if (kind == "ple") {
        Model<PLE<T>> m(ple_spec(c));
        check_case<T>(m, c);
    } else if (kind == "cgc") {
        Model<CGC<T>> m(ple_spec(c));
        check_case<T>(m, c);
    } else if (kind == "omoe") {
        Model<OMoE<T>> m(mmoe_spec(c));
        check_case<T>(m, c);
    } else {
        Model<MMoE<T>> m(mmoe_spec(c));
        check_case<T>(m, c);
    }
}

template <class T>
const char* suffix() {
    return std::is_same_v<T, double> ? "f64" : "f32";
}

}  // namespace

TEMPLATE_TEST_CASE("PyTorch parity: the shared MMoE reference cases", "[parity][models]", float, double) {
    const std::string path = std::string(MOE_SHARED_DIR) + "/reference/tiny_" + suffix<TestType>() + ".safetensors";
    if (!std::filesystem::exists(path)) {
        WARN("skipped: " << path << " is not present (the shared reference folder is outside the repository)");
        return;
    }
    run_file<TestType>(path);
}

TEMPLATE_TEST_CASE("PyTorch parity: MMoE, OMoE, SharedBottom, PLE and CGC cases of tools/make_mmoe_reference.py",
                   "[parity][models]", float, double) {
    for (const char* name : {"mmoe_deep", "mmoe_wide", "omoe", "shared_bottom", "ple", "cgc", "mmoe_dselect",
                             "mmoe_surfaces", "cgc_surfaces"})
        run_file<TestType>(moe::testing::fixture_path(std::string("mt_") + name + "_" + suffix<TestType>() + ".safetensors"));
}

}  // namespace test_parity_models
