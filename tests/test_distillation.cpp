// Knowledge distillation's loss: the hard part is MultiTaskLoss's, the soft part its definition
// (T^2 BCE at temperature T for binary tasks, MSE to the teacher for regression), gradients checked
// by finite differences, and bad teacher predictions or settings refused by name.
#include <cmath>
#include <vector>

#include "moe/tasks/distillation.hpp"
#include "support/catch.hpp"
#include "support/gradcheck.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_distillation {

using namespace moe;
using Catch::Matchers::Contains;
using moe::testing::random_matrix;

namespace {
const std::vector<TaskSpec> kTasks{binary_task("click"), regression_task("watch")};

struct Batch {
    Matrix<double> z = random_matrix(2, 6, 3) * 3.0;  // row t: task t's outputs
    Matrix<double> labels = (Matrix<double>(2, 6) << 1, 0, 0, 1, 1, 0, 0.5, 1.5, 0.0, 2.0, 0.3, 1.1).finished();
    Matrix<double> teacher = (Matrix<double>(2, 6) << 0.9, 0.2, 0.4, 0.7, 0.99, 0.01, 0.4, 1.2, 0.1, 1.8, 0.5, 1.0).finished();
    Matrix<double> mask = (Matrix<double>(2, 6) << 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1).finished();
    std::vector<ConstView<double>> outputs() const {
        return {ConstView<double>(z.data(), 1, 6, 2), ConstView<double>(z.data() + 1, 1, 6, 2)};
    }
};
}  // namespace

TEST_CASE("DistillationLoss: (1 - alpha) hard + alpha soft per task, the soft part as defined", "[distillation]") {
    const Batch d;
    const auto out = d.outputs();
    MultiTaskLoss<double> hard(kTasks);
    const double hard_total = hard.forward(out, d.labels, d.mask);
    DistillationLoss<double> none(kTasks, {{0.0, 1.0}, {0.0, 1.0}});
    CHECK(none.forward(out, d.labels, d.teacher, d.mask) == Approx(hard_total).epsilon(1e-14));

    const double temp = 2.0;
    DistillationLoss<double> loss(kTasks, {{0.7, temp}, {0.4, 1.0}});
    const double total = loss.forward(out, d.labels, d.teacher, d.mask);
    double soft_click = 0, soft_watch = 0;
    for (Index b = 0; b < 6; ++b) {
        const double q = 1 / (1 + std::exp(-d.z(0, b) / temp)), t = d.teacher(0, b);
        const double p = 1 / (1 + std::exp(-std::log(t / (1 - t)) / temp));  // the teacher softened alike
        soft_click += -(p * std::log(q) + (1 - p) * std::log(1 - q));
        soft_watch += std::pow(d.z(1, b) - d.teacher(1, b), 2);
    }
    soft_click *= temp * temp / 6;
    soft_watch /= 6;
    CHECK(loss.soft_loss(0) == Approx(soft_click).epsilon(1e-12));
    CHECK(loss.soft_loss(1) == Approx(soft_watch).epsilon(1e-12));
    CHECK(loss.hard_loss(0) == Approx(hard.task_loss(0)).epsilon(1e-14));
    CHECK(total == Approx(0.3 * hard.task_loss(0) + 0.7 * soft_click + 0.6 * hard.task_loss(1) + 0.4 * soft_watch).epsilon(1e-12));
}

TEST_CASE("DistillationLoss: a student that predicts the teacher's probabilities has no soft gradient at any temperature",
          "[distillation]") {
    Batch d;
    for (Index b = 0; b < 6; ++b) d.z(0, b) = std::log(d.teacher(0, b) / (1 - d.teacher(0, b))), d.z(1, b) = d.teacher(1, b);
    for (double temp : {1.0, 2.0, 5.0}) {
        INFO("temperature " << temp);
        DistillationLoss<double> soft(kTasks, {{1.0, temp}, {1.0, 1.0}});
        soft.forward(d.outputs(), d.labels, d.teacher, d.mask);
        const auto& g = soft.backward();
        CHECK(Matrix<double>(g[0]).cwiseAbs().maxCoeff() < 1e-15);
        CHECK(Matrix<double>(g[1]).cwiseAbs().maxCoeff() == 0.0);
    }
}

TEST_CASE("DistillationLoss: gradients by finite differences", "[distillation][gradcheck]") {
    Batch d;
    DistillationLoss<double> loss(kTasks, {{0.6, 3.0}, {0.25, 1.0}});
    loss.forward(d.outputs(), d.labels, d.teacher, d.mask);
    const auto& g = loss.backward();
    std::vector<double> analytic(12);
    for (Index b = 0; b < 6; ++b) {
        analytic[std::size_t(2 * b)] = g[0](0, b);
        analytic[std::size_t(2 * b + 1)] = g[1](0, b);
    }
    std::vector<moe::testing::Probe> probes{{"outputs", d.z.data(), analytic}};
    auto f = [&] { return double(loss.forward(d.outputs(), d.labels, d.teacher, d.mask)); };
    const auto result = moe::testing::check_gradients(f, probes);
    INFO(result.worst);
    CHECK(result.max_error < 1e-6);
}

TEST_CASE("DistillationLoss: bad teacher predictions and settings are refused by name", "[distillation][errors]") {
    Batch d;
    DistillationLoss<double> loss(kTasks, {{0.5, 1.0}, {0.5, 1.0}});
    d.teacher(0, 3) = 1.5;
    CHECK_THROWS_WITH(loss.forward(d.outputs(), d.labels, d.teacher, d.mask),
                      Contains("teacher prediction of task 'click' at sample 3 is 1.5, expected a probability in [0, 1]"));
    d.teacher(0, 3) = 0.5;
    d.teacher(1, 2) = std::nan("");
    CHECK_THROWS_WITH(loss.forward(d.outputs(), d.labels, d.teacher, d.mask), Contains("task 'watch' at sample 2 is nan"));
    const Matrix<double> short_teacher = Matrix<double>::Zero(2, 5);
    CHECK_THROWS_AS(loss.forward(d.outputs(), d.labels, short_teacher, d.mask), shape_error);
    CHECK_THROWS_WITH(loss.backward(), Contains("no forward before it"));
    const Matrix<double> none = Matrix<double>::Zero(2, 0);
    const std::vector<ConstView<double>> empty_outputs{ConstView<double>(none.data(), 1, 0, 2), ConstView<double>(none.data(), 1, 0, 2)};
    CHECK_THROWS_WITH(loss.forward(empty_outputs, none, none), Contains("no samples"));
    CHECK_THROWS_WITH(DistillationLoss<double>(kTasks, {{0.5, 1.0}}), Contains("1 distillation settings for 2 tasks"));
    CHECK_THROWS_WITH(DistillationLoss<double>(kTasks, {{1.5, 1.0}, {0.5, 1.0}}), Contains("alpha must be in [0, 1]"));
    CHECK_THROWS_WITH(DistillationLoss<double>(kTasks, {{0.5, 0.0}, {0.5, 1.0}}), Contains("temperature must be finite and > 0"));
    CHECK_THROWS_WITH(DistillationLoss<double>({multiclass_task("rating", 3)}, {{0.5, 1.0}}), Contains("is multiclass"));
}

}  // namespace test_distillation
