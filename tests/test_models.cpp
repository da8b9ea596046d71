// Gradient checks and behaviour of the multi-task models and their parts: GroupedLinear, grouped
// MLP, Expert, ExpertBank, Gate, GateBank, Tower, MMoE, OMoE, SharedBottom, MultiTaskLoss.
#include "support/catch.hpp"
#include "support/gradcheck.hpp"
#include "support/specs.hpp"
#include "support/model_checks.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_models {

using namespace moe;
using moe::testing::gradcheck_bare;
using moe::testing::small_mmoe;
using moe::testing::check_gradients;
using moe::testing::check_layer;
using moe::testing::Probe;
using moe::testing::gradcheck_model;
using moe::testing::random_matrix;

namespace {
constexpr double kTol = 1e-6;

std::vector<TaskSpec> all_kinds() { return moe::testing::all_task_kinds(); }
}  // namespace

TEST_CASE("GroupedLinear: gradients, shared and grouped inputs", "[models][gradcheck]") {
    GroupedLinear<double> shared(3, 4, 2, true);
    CHECK(gradcheck_bare(shared, random_matrix(4, 5, 2)) < kTol);
    GroupedLinear<double> grouped(3, 4, 2, false);
    CHECK(gradcheck_bare(grouped, random_matrix(12, 5, 3)) < kTol);
}

TEST_CASE("ExpertBank equals separate experts with the same weights, and names them per expert", "[models]") {
    MLPSpec spec{{4, 6, 5, 3}};
    spec.output_activation = true;
    spec.batchnorm = true;
    ExpertBank<double> bank(3, spec, "bank");
    ParameterStore<double> store;
    store.bind(bank);
    Rng rng(5);
    bank.reset_parameters(rng);
    CHECK(store.contains("0.0.weight"));
    CHECK(store.contains("2.3.bias"));  // expert 2, its BatchNorm at index 2? no: Linear 0, ReLU 1, BN 2, Linear 3
    CHECK(store.value("1.0.weight").rows() == 6);
    CHECK(store.value("1.0.weight").cols() == 4);
    CHECK(store.value("2.5.weight").rows() == 5);

    const Matrix<double> x = random_matrix(4, 7, 9);
    const Matrix<double> y = bank.forward(x);
    REQUIRE(y.rows() == 9);
    for (Index e = 0; e < 3; ++e) {
        Expert<double> one(spec);
        ParameterStore<double> s1;
        s1.bind(one);
        for (const auto& entry : s1.entries())
            s1.value(entry.name) = store.value(std::to_string(e) + "." + entry.name);
        const Matrix<double> ye = one.forward(x);
        CHECK((y.middleRows(e * 3, 3) - ye).cwiseAbs().maxCoeff() < 1e-12);
    }
}

TEST_CASE("Expert, ExpertBank, Gate, GateBank, Tower: gradients in training with batchnorm and dropout",
          "[models][gradcheck]") {
    MLPSpec spec{{4, 6, 5, 3}};
    spec.batchnorm = true;
    spec.dropout = 0.3;
    spec.output_activation = true;
    auto freeze = [](auto& m) { m.for_each_dropout([](Dropout<double>& d) { d.freeze_mask(true); }); };
    Expert<double> expert(spec);
    freeze(expert);
    CHECK(gradcheck_bare(expert, random_matrix(4, 6, 1)) < kTol);
    ExpertBank<double> bank(3, spec);
    freeze(bank);
    CHECK(gradcheck_bare(bank, random_matrix(4, 6, 2)) < kTol);
    Gate<double> gate(4, 3);
    CHECK(gradcheck_bare(gate, random_matrix(4, 6, 3)) < kTol);
    GateBank<double> gates(2, 4, 3, {5}, ActivationKind::tanh);
    CHECK(gradcheck_bare(gates, random_matrix(4, 6, 4)) < kTol);
    for (const TaskSpec& task : all_kinds()) {
        MLPSpec ts{{4, 5, task.outputs()}};
        ts.batchnorm = true;
        ts.dropout = 0.2;
        Tower<double> tower(ts, task);
        freeze(tower);
        INFO("task " << task.name);
        CHECK(gradcheck_bare(tower, random_matrix(4, 6, 5), 3) < kTol);
    }
}

TEST_CASE("Gate: probabilities sum to one per gate", "[models]") {
    GateBank<double> gates(3, 4, 5);
    ParameterStore<double> store;
    store.bind(gates);
    Rng rng(1);
    gates.reset_parameters(rng);
    const Matrix<double> p = gates.forward(random_matrix(4, 7, 2));
    REQUIRE(p.rows() == 15);
    for (Index g = 0; g < 3; ++g)
        CHECK((p.middleRows(g * 5, 5).colwise().sum().array() - 1.0).abs().maxCoeff() < 1e-12);
    CHECK(store.contains("2.weight"));
}

TEST_CASE("MMoE, OMoE, SharedBottom: gradients with all task kinds and masks", "[models][gradcheck]") {
    const auto tasks = all_kinds();
    MultiTaskLoss<double> loss(tasks, {{}, {LossKind::huber, 0.7, 0.5}, {LossKind::mse, 2.0}, {}});
    for (bool masked : {false, true}) {
        INFO("masked " << masked);
        MMoESpec s = small_mmoe(tasks);
        Model<MMoE<double>> plain(s, 1);
        CHECK(gradcheck_model(plain, 6, loss, masked) < kTol);
        s.batchnorm = true;
        s.expert_dropout = 0.25;
        s.tower_dropout = 0.25;
        s.gate_hidden = {4};
        Model<MMoE<double>> mmoe(s, 2);
        CHECK(gradcheck_model(mmoe, 6, loss, masked) < kTol);
        Model<OMoE<double>> omoe(s, 3);
        CHECK(gradcheck_model(omoe, 6, loss, masked) < kTol);
        SharedBottomSpec b;
        b.input = 5;
        b.bottom_hidden = {7};
        b.bottom_dim = 4;
        b.tower_hidden = {3};
        b.tasks = tasks;
        b.batchnorm = true;
        b.bottom_dropout = 0.2;
        b.tower_dropout = 0.2;
        Model<SharedBottom<double>> bottom(b, 4);
        CHECK(gradcheck_model(bottom, 6, loss, masked) < kTol);
    }
}

TEST_CASE("MMoE: gradients at 300 samples (experts and towers in column blocks)", "[models][gradcheck]") {
    const auto tasks = all_kinds();
    MultiTaskLoss<double> loss(tasks, {{}, {LossKind::huber, 0.7, 0.5}, {LossKind::mse, 2.0}, {}});
    Model<MMoE<double>> mmoe(small_mmoe(tasks), 5);
    CHECK(gradcheck_model(mmoe, 300, loss, true) < kTol);
}

TEST_CASE("MMoE: parameter names follow the PyTorch module", "[models]") {
    Model<MMoE<double>> m(small_mmoe({binary_task("a"), regression_task("b")}), 1);
    for (const char* name : {"experts.0.0.weight", "experts.2.2.bias", "gates.0.weight", "gates.1.bias",
                             "towers.0.0.weight", "towers.1.2.bias"})
        CHECK(m.params().contains(name));
    Model<OMoE<double>> o(small_mmoe({binary_task("a"), regression_task("b")}), 1);
    CHECK(o.params().contains("gate.weight"));
    CHECK_FALSE(o.params().contains("gates.0.weight"));
    // One task and one expert are still ModuleLists of one in PyTorch: "gates.0", "experts.0.0".
    MMoESpec one = small_mmoe({binary_task("a")});
    one.experts = 1;
    Model<MMoE<double>> single(one, 1);
    for (const char* name : {"experts.0.0.weight", "experts.0.2.bias", "gates.0.weight", "towers.0.0.weight"})
        CHECK(single.params().contains(name));
    one.gate_hidden = {3};
    Model<MMoE<double>> deep_gate(one, 1);
    CHECK(deep_gate.params().contains("gates.0.0.weight"));
}

TEST_CASE("MMoE: predict equals forward in evaluation mode with the heads applied", "[models]") {
    MMoESpec s = small_mmoe(all_kinds());
    s.batchnorm = true;
    Model<MMoE<double>> m(s, 3);
    const Matrix<double> x = random_matrix(5, 8, 1);
    m.train();
    m.forward(x);  // move the running statistics away from their init
    m.eval();
    const auto& out = m.forward(x);
    std::vector<Matrix<double>> logits(out.begin(), out.end());
    InferenceWorkspace<double> ws;
    const auto& pred = m.predict(x, ws);
    REQUIRE(pred.size() == 4);
    CHECK((pred[0] - logits[0].unaryExpr([](double v) { return 1 / (1 + std::exp(-v)); })).cwiseAbs().maxCoeff() < 1e-12);
    CHECK((pred[1] - logits[1]).cwiseAbs().maxCoeff() < 1e-12);
    CHECK((pred[2] - logits[2]).cwiseAbs().maxCoeff() < 1e-12);
    Matrix<double> soft = logits[3].array().exp().matrix();
    soft = soft.array().rowwise() / soft.colwise().sum().array();
    CHECK((pred[3] - soft).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("Models: bad configs and inputs give clear errors", "[models][errors]") {
    MMoESpec s = small_mmoe({binary_task("click")});
    s.experts = 0;
    CHECK_THROWS_WITH(MMoE<double>(s), Catch::Matchers::Contains("experts must be positive, got 0"));
    s = small_mmoe({});
    CHECK_THROWS_WITH(MMoE<double>(s), Catch::Matchers::Contains("at least one task"));
    s = small_mmoe({binary_task("a"), binary_task("a")});
    CHECK_THROWS_WITH(MMoE<double>(s), Catch::Matchers::Contains("'a' is used twice"));
    s = small_mmoe({multiclass_task("m", 1)});
    CHECK_THROWS_AS(MMoE<double>(s), config_error);

    Model<MMoE<double>> m(small_mmoe({binary_task("click"), regression_task("watch")}), 1);
    CHECK_THROWS_WITH(m.forward(random_matrix(4, 3, 1)),
                      Catch::Matchers::Contains("moe::MMoE::forward") && Catch::Matchers::Contains("5"));
    InferenceWorkspace<double> ws;
    CHECK_THROWS_AS(m.predict(random_matrix(6, 3, 1), ws), shape_error);

    MultiTaskLoss<double> loss(m.tasks());
    const auto& out = m.forward(random_matrix(5, 4, 1));
    const Matrix<double> y34 = Matrix<double>::Zero(3, 4), y24 = Matrix<double>::Zero(2, 4);
    const Matrix<double> m23 = Matrix<double>::Ones(2, 3);
    CHECK_THROWS_WITH(loss.forward(out, y34), Catch::Matchers::Contains("labels is 3 x 4, expected 2 x 4"));
    CHECK_THROWS_WITH(loss.forward(out, y24, m23), Catch::Matchers::Contains("mask is 2 x 3"));
    Matrix<double> bad = Matrix<double>::Zero(2, 4);
    bad(0, 1) = 2;
    CHECK_THROWS_WITH(loss.forward(out, bad), Catch::Matchers::Contains("'click'") && Catch::Matchers::Contains("[0, 1]"));
    CHECK_THROWS_AS(MultiTaskLoss<double>(m.tasks(), {TaskLoss{}}), config_error);
    CHECK_THROWS_AS(MultiTaskLoss<double>(m.tasks(), {TaskLoss{LossKind::cross_entropy}, TaskLoss{}}), config_error);
}

TEST_CASE("MultiTaskLoss: a masked task counts only its labelled samples and ignores masked labels", "[models]") {
    std::vector<TaskSpec> tasks{binary_task("click"), binary_task("like")};
    MultiTaskLoss<double> loss(tasks);
    Matrix<double> z = random_matrix(1, 4, 3), z2 = random_matrix(1, 4, 4);
    Matrix<double> y(2, 4);
    y << 1, 0, 1, 1, 1, std::nan(""), 0, std::nan("");
    Matrix<double> mask(2, 4);
    mask << 1, 1, 1, 1, 1, 0, 1, 0;
    const double total = loss.forward({ConstView<double>(z), ConstView<double>(z2)}, y, mask);
    BCEWithLogitsLoss<double> bce;
    const Matrix<double> z2c = (Matrix<double>(1, 2) << z2(0, 0), z2(0, 2)).finished();
    const Matrix<double> y2c = (Matrix<double>(1, 2) << 1, 0).finished();
    const double like = bce.forward(z2c, y2c);
    CHECK(std::abs(loss.task_loss(1) - like) < 1e-12);
    CHECK(std::abs(total - loss.task_loss(0) - like) < 1e-12);
}

}  // namespace test_models
