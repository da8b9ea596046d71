// Task weighting of MultiTaskLoss: uncertainty weighting (values, gradients, training), PLE's
// per-epoch weight schedule, and sample-space masks.
#include <cmath>

#include "support/catch.hpp"
#include "support/gradcheck.hpp"
#include "support/model_checks.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_task_weighting {

using namespace moe;
using Catch::Matchers::Contains;
using moe::testing::random_matrix;

namespace {
std::vector<TaskSpec> mixed_tasks() { return {binary_task("income"), regression_task("hours"), multiclass_task("status", 3)}; }

PLESpec small_ple(const std::vector<TaskSpec>& tasks) {
    PLESpec s;
    s.input = 5;
    s.levels = {PLELevelSpec{2, 1, {6}, 4}, PLELevelSpec{1, 2, {}, 3}};
    s.tower_hidden = {3};
    s.tasks = tasks;
    return s;
}
}  // namespace

TEST_CASE("Uncertainty weighting: the total is sum c_t exp(-s_t) w_t L_t + s_t / 2", "[weighting]") {
    const auto tasks = mixed_tasks();
    MultiTaskLoss<double> fixed(tasks, {{LossKind::automatic, 2.0}, {}, {}});
    MultiTaskLoss<double> unc(tasks, {{LossKind::automatic, 2.0}, {}, {}}, TaskWeighting::uncertainty);
    REQUIRE(unc.log_variances().size() == 3);
    CHECK(fixed.log_variances().size() == 0);
    unc.log_variances() << 0.3, -0.2, 0.5;
    const std::vector<Matrix<double>> out{random_matrix(1, 6, 1), random_matrix(1, 6, 2), random_matrix(3, 6, 3)};
    const std::vector<ConstView<double>> views(out.begin(), out.end());
    const Matrix<double> y = moe::testing::labels_for(tasks, 6, 4);
    fixed.forward(views, y);
    const double total = unc.forward(views, y);
    const double expected = 1.0 * std::exp(-0.3) * 2.0 * fixed.task_loss(0) + 0.15 +  // binary: c = 1
                            0.5 * std::exp(0.2) * fixed.task_loss(1) - 0.1 +          // regression: c = 1/2
                            1.0 * std::exp(-0.5) * fixed.task_loss(2) + 0.25;
    CHECK(total == Approx(expected).epsilon(1e-12));
    CHECK(unc.effective_weight(1) == Approx(0.5 * std::exp(0.2)));
}

TEST_CASE("Uncertainty weighting: gradients of the log-variances, the model and the input (PLE, masks)",
          "[weighting][gradcheck]") {
    const auto tasks = mixed_tasks();
    for (bool masked : {false, true}) {
        INFO("masked " << masked);
        MultiTaskLoss<double> loss(tasks, {{LossKind::automatic, 1.5, 1.0, 0.8}, {LossKind::huber, 1.0, 0.5}, {}},
                                   TaskWeighting::uncertainty);
        loss.set_epoch(2);
        loss.log_variances() << 0.4, -0.3, 0.1;
        Model<PLE<double>> model(small_ple(tasks), 3);
        Matrix<double> x = random_matrix(5, 7, 11);
        const Matrix<double> y = moe::testing::labels_for(tasks, 7, 12);
        Matrix<double> mask = masked ? moe::testing::mask_for(3, 7) : Matrix<double>();
        if (masked) mask.row(2).setZero();  // a task with no labelled sample in the batch
        auto f = [&] { return loss.forward(model.forward(x), y, mask); };
        model.zero_grad();
        loss.zero_grad();
        f();
        const Matrix<double> dx = model.backward(loss.backward(), true);
        std::vector<moe::testing::Probe> probes;
        probes.push_back({"input", x.data(), std::vector<double>(dx.data(), dx.data() + dx.size())});
        probes.push_back({"log_variances", loss.log_variances().data(),
                          std::vector<double>(loss.log_variance_grads().data(), loss.log_variance_grads().data() + 3)});
        moe::testing::add_parameter_probes(model, probes);
        const auto r = moe::testing::check_gradients(f, probes);
        INFO(r.report << "worst: " << r.worst);
        CHECK(r.max_error < 1e-6);
        if (masked) CHECK(loss.log_variance_grads()(2) == 0.0);  // absent task: no s/2 pull
    }
}

TEST_CASE("Weight schedule: w_t(epoch) = w_t0 gamma_t^epoch, applied by fit each epoch", "[weighting][train]") {
    const std::vector<TaskSpec> tasks{binary_task("click"), regression_task("watch")};
    MultiTaskLoss<double> loss(tasks, {{LossKind::automatic, 1.0, 1.0, 0.5}, {LossKind::automatic, 2.0, 1.0, 1.0}});
    loss.set_epoch(3);
    CHECK(loss.weight(0) == Approx(0.125));
    CHECK(loss.weight(1) == Approx(2.0));
    loss.set_weight(0, 4.0);  // sets w_0, the schedule still applies
    CHECK(loss.weight(0) == Approx(0.5));

    MMoESpec s;
    s.input = 4;
    s.experts = 2;
    s.expert_dim = 3;
    s.tasks = tasks;
    Model<MMoE<double>> model(s, 1);
    MultiTaskData<double> data;
    data.x = random_matrix(4, 64, 5);
    data.labels = moe::testing::labels_for(tasks, 64, 6);
    FitOptions o;
    o.epochs = 4;
    o.batch_size = 16;
    o.progress = Progress::silent;
    const FitHistory h = fit(model, loss, data, nullptr, o);
    REQUIRE(h.epochs.size() == 4);
    for (int e = 0; e < 4; ++e) {
        CHECK(h.epochs[std::size_t(e)].task_weights[0] == Approx(4.0 * std::pow(0.5, e)));
        CHECK(h.epochs[std::size_t(e)].task_weights[1] == Approx(2.0));
    }
}

TEST_CASE("Uncertainty weighting in fit: the noisier task learns the larger variance", "[weighting][train]") {
    // Two regression tasks on the same signal, one with label noise of std 1, one almost clean.
    const std::vector<TaskSpec> tasks{regression_task("clean"), regression_task("noisy")};
    MultiTaskData<double> data;
    const Index n = 2048;
    data.x = random_matrix(4, n, 7);
    data.labels.resize(2, n);
    Rng rng(3);
    for (Index j = 0; j < n; ++j) {
        const double signal = data.x(0, j) - data.x(1, j);
        data.labels(0, j) = signal + 0.01 * rng.normal();
        data.labels(1, j) = signal + 1.0 * rng.normal();
    }
    MMoESpec s;
    s.input = 4;
    s.experts = 2;
    s.expert_hidden = {8};
    s.expert_dim = 8;
    s.tasks = tasks;
    Model<MMoE<double>> model(s, 2);
    MultiTaskLoss<double> loss(tasks, {}, TaskWeighting::uncertainty);
    FitOptions o;
    o.epochs = 20;
    o.batch_size = 128;
    o.lr = 0.01;
    o.progress = Progress::silent;
    fit(model, loss, data, nullptr, o);
    // At the optimum sigma_t^2 = 2 c_t L_t = L_t for regression: noise variance 1 -> s near 0, clean -> very negative.
    INFO("log variances " << loss.log_variances().transpose());
    CHECK(loss.log_variances()(1) > loss.log_variances()(0) + 1.0);
    CHECK(std::abs(loss.log_variances()(1)) < 0.5);
}

TEST_CASE("Task weighting: bad settings are clear errors", "[weighting][errors]") {
    const std::vector<TaskSpec> tasks{binary_task("click")};
    CHECK_THROWS_WITH(MultiTaskLoss<double>(tasks, {{LossKind::automatic, 1.0, 1.0, 0.0}}),
                      Contains("gamma of task 'click' must be finite and > 0, got 0"));
    MultiTaskLoss<double> loss(tasks);
    CHECK_THROWS_WITH(loss.set_epoch(-1), Contains("epoch must be >= 0, got -1"));
}

}  // namespace test_task_weighting
