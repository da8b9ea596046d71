// PLE and CGC: the wiring against a naive per-sample computation, CGC without task experts equals
// MMoE, gradient checks (double) with mixed task kinds, masks, batchnorm and dropout, predict,
// parameter names, bad configs.
#include <cmath>

#include "support/catch.hpp"
#include "support/gradcheck.hpp"
#include "support/model_checks.hpp"
#include "support/specs.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_ple {

using namespace moe;
using moe::testing::random_matrix;
using moe::testing::small_ple;

namespace {
constexpr double kTol = 1e-6;

std::vector<TaskSpec> three_kinds() { return moe::testing::three_task_kinds(); }

Vector<double> softmax(const Vector<double>& z) {
    Vector<double> e = (z.array() - z.maxCoeff()).exp().matrix();
    return e / e.sum();
}

/// The PLE of linear experts (relu outputs) and linear towers, one sample at a time, from the
/// parameters by name: what the paper's figure says, written without any of the batching.
std::vector<Vector<double>> naive_ple(Model<PLE<double>>& m, const Vector<double>& x) {
    const PLESpec& s = m.spec();
    const Index T = static_cast<Index>(s.tasks.size());
    auto& p = m.params();
    auto linear = [&](const std::string& name, const Vector<double>& v) -> Vector<double> {
        return p.value(name + ".weight") * v + Vector<double>(p.value(name + ".bias"));
    };
    std::vector<Vector<double>> reps(static_cast<std::size_t>(T + 1), x);  // T task inputs + shared
    for (std::size_t l = 0; l < s.levels.size(); ++l) {
        const std::string lp = "levels." + std::to_string(l) + ".";
        const Index P = s.levels[l].task_experts, S = s.levels[l].shared_experts;
        std::vector<Vector<double>> out(static_cast<std::size_t>(T));
        std::vector<Vector<double>> o;  // expert outputs, task experts then shared
        for (Index e = 0; e < T * P + S; ++e) {
            const auto& in = reps[static_cast<std::size_t>(e < T * P ? e / P : T)];
            o.push_back(linear(lp + "experts." + std::to_string(e) + ".0", in).cwiseMax(0.0));
        }
        for (Index t = 0; t < T; ++t) {
            const Vector<double> g = softmax(linear(lp + "task_gates." + std::to_string(t), reps[static_cast<std::size_t>(t)]));
            Vector<double> mix = Vector<double>::Zero(o[0].size());
            for (Index j = 0; j < P; ++j) mix += g(j) * o[static_cast<std::size_t>(t * P + j)];
            for (Index j = 0; j < S; ++j) mix += g(P + j) * o[static_cast<std::size_t>(T * P + j)];
            out[static_cast<std::size_t>(t)] = mix;
        }
        if (l + 1 < s.levels.size()) {
            const Vector<double> g = softmax(linear(lp + "shared_gate", reps.back()));
            Vector<double> mix = Vector<double>::Zero(o[0].size());
            for (std::size_t e = 0; e < o.size(); ++e) mix += g(static_cast<Index>(e)) * o[e];
            out.push_back(mix);
        }
        reps = out;
    }
    std::vector<Vector<double>> y;
    for (Index t = 0; t < T; ++t) y.push_back(linear("towers." + std::to_string(t) + ".0", reps[static_cast<std::size_t>(t)]));
    return y;
}
}  // namespace

TEST_CASE("PLE: forward equals a naive per-sample computation of the paper's wiring", "[ple]") {
    for (int levels : {1, 2, 3}) {
        INFO("levels " << levels);
        PLESpec s = small_ple(three_kinds(), levels);
        for (auto& l : s.levels) l.expert_hidden.clear();
        s.tower_hidden.clear();
        Model<PLE<double>> m(s, 5);
        const Matrix<double> x = random_matrix(5, 7, 2);
        const auto& out = m.forward(x);
        for (Index b = 0; b < x.cols(); ++b) {
            const auto ref = naive_ple(m, x.col(b));
            for (std::size_t t = 0; t < ref.size(); ++t) CHECK((out[t].col(b) - ref[t]).cwiseAbs().maxCoeff() < 1e-12);
        }
    }
}

TEST_CASE("CGC without task experts is an MMoE over the shared experts", "[ple]") {
    MMoESpec ms;
    ms.input = 5;
    ms.experts = 3;
    ms.expert_hidden = {6};
    ms.expert_dim = 4;
    ms.tower_hidden = {3};
    ms.tasks = three_kinds();
    Model<MMoE<double>> mmoe(ms, 1);
    PLESpec ps;
    ps.input = 5;
    ps.levels = {PLELevelSpec{3, 0, {6}, 4}};
    ps.tower_hidden = {3};
    ps.tasks = three_kinds();
    Model<CGC<double>> cgc(ps, 2);
    for (const auto& e : cgc.params().entries()) {
        std::string name = e.name;
        name = name.substr(std::string("levels.0.").size() * (name.rfind("levels.0.", 0) == 0));
        if (name.rfind("task_gates.", 0) == 0) name = "gates." + name.substr(std::string("task_gates.").size());
        cgc.params().value(e.name) = mmoe.params().value(name);
    }
    const Matrix<double> x = random_matrix(5, 9, 3);
    const auto& a = mmoe.forward(x);
    const auto& b = cgc.forward(x);
    for (std::size_t t = 0; t < a.size(); ++t) CHECK((a[t] - b[t]).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("CGC, PLE: gradients with mixed task kinds, masks, batchnorm and dropout", "[ple][gradcheck]") {
    for (bool masked : {false, true}) {
        for (bool extras : {false, true}) {
            INFO("masked " << masked << " batchnorm/dropout " << extras);
            for (auto tasks : {three_kinds(), std::vector<TaskSpec>{binary_task("a"), regression_task("b", true)}}) {
                MultiTaskLoss<double> loss(tasks);
                PLESpec s = small_ple(tasks, 1);
                s.batchnorm = extras;
                s.expert_dropout = extras ? 0.25 : 0.0;
                s.tower_dropout = extras ? 0.25 : 0.0;
                Model<CGC<double>> cgc(s, 3);
                CHECK(moe::testing::gradcheck_model(cgc, 6, loss, masked) < kTol);
                s = small_ple(tasks, 2);
                s.batchnorm = extras;
                s.expert_dropout = extras ? 0.25 : 0.0;
                Model<PLE<double>> ple(s, 4);
                CHECK(moe::testing::gradcheck_model(ple, 6, loss, masked) < kTol);
            }
        }
    }
}

TEST_CASE("PLE: parameter names follow the PyTorch module", "[ple]") {
    Model<PLE<double>> m(small_ple(three_kinds(), 2), 1);
    // Level 0: 3 tasks x 1 + 2 shared = 5 experts; level 1: 3 x 2 + 2 = 8; no shared gate at the last.
    for (const char* name : {"levels.0.experts.0.0.weight", "levels.0.experts.4.2.bias", "levels.0.task_gates.2.weight",
                             "levels.0.shared_gate.weight", "levels.1.experts.7.0.weight", "levels.1.task_gates.0.bias",
                             "towers.2.2.weight"})
        CHECK(m.params().contains(name));
    CHECK_FALSE(m.params().contains("levels.0.experts.5.0.weight"));
    CHECK_FALSE(m.params().contains("levels.1.shared_gate.weight"));
    CHECK(m.params().value("levels.0.task_gates.1.weight").rows() == 3);   // 1 own + 2 shared
    CHECK(m.params().value("levels.0.shared_gate.weight").rows() == 5);    // all experts
    CHECK(m.params().value("levels.1.experts.0.0.weight").cols() == 4);    // level 0's expert_dim
    PLESpec one;  // one task, one expert: still ModuleLists of one, as in PyTorch
    one.input = 3;
    one.levels = {PLELevelSpec{1, 0, {}, 2}};
    one.tasks = {binary_task("a")};
    Model<CGC<double>> single(one, 1);
    CHECK(single.params().contains("levels.0.experts.0.0.weight"));
    CHECK(single.params().contains("levels.0.task_gates.0.weight"));
}

TEST_CASE("PLE: predict equals forward in evaluation mode with the heads applied", "[ple]") {
    PLESpec s = small_ple(three_kinds(), 3);
    s.batchnorm = true;
    Model<PLE<double>> m(s, 3);
    const Matrix<double> x = random_matrix(5, 300, 1);  // several blocks, over threads when there are
    m.train();
    m.forward(x);
    m.eval();
    const auto& out = m.forward(x);
    std::vector<Matrix<double>> logits(out.begin(), out.end());
    InferenceWorkspace<double> ws;
    const auto& pred = m.predict(x, ws);
    CHECK((pred[0] - logits[0].unaryExpr([](double v) { return 1 / (1 + std::exp(-v)); })).cwiseAbs().maxCoeff() < 1e-12);
    CHECK((pred[1] - logits[1]).cwiseAbs().maxCoeff() < 1e-12);
    Matrix<double> soft = logits[2].array().exp().matrix();
    soft = soft.array().rowwise() / soft.colwise().sum().array();
    CHECK((pred[2] - soft).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("PLE, CGC: bad configs and inputs give clear errors", "[ple][errors]") {
    PLESpec s = small_ple(three_kinds(), 2);
    CHECK_THROWS_WITH(CGC<double>(s), Catch::Matchers::Contains("exactly one level, got 2"));
    s.levels.clear();
    CHECK_THROWS_WITH(PLE<double>(s), Catch::Matchers::Contains("at least one level"));
    s = small_ple(three_kinds(), 2);
    s.levels[1].shared_experts = 0;
    CHECK_THROWS_WITH(PLE<double>(s), Catch::Matchers::Contains("moe::PLE.levels.1") &&
                                          Catch::Matchers::Contains("shared_experts must be positive, got 0"));
    s = small_ple(three_kinds(), 2);
    s.levels[0].expert_dim = 0;
    CHECK_THROWS_WITH(PLE<double>(s), Catch::Matchers::Contains("expert_dim must be positive"));
    s = small_ple({}, 1);
    CHECK_THROWS_WITH(PLE<double>(s), Catch::Matchers::Contains("at least one task"));
    Model<PLE<double>> m(small_ple(three_kinds(), 2), 1);
    CHECK_THROWS_WITH(m.forward(random_matrix(4, 3, 1)), Catch::Matchers::Contains("moe::PLE::forward"));
    InferenceWorkspace<double> ws;
    CHECK_THROWS_AS(m.predict(random_matrix(6, 3, 1), ws), shape_error);
}

}  // namespace test_ple
