// Losses: gradient checks with weights and masks, stability, values, and bad labels.
#include "support/catch.hpp"
#include "support/gradcheck.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_losses {

using namespace moe;
using moe::testing::random_matrix;
using Catch::Matchers::Contains;

namespace {
/// Gradient check of a loss with respect to its logits.
template <class Loss>
double gradcheck_loss(Loss& loss, Matrix<double> z, const Matrix<double>& y, const Matrix<double>& w) {
    const ConstView<double> wv = w.size() ? ConstView<double>(w) : ConstView<double>();
    loss.forward(z, y, wv);
    const Matrix<double> g = loss.backward();
    std::vector<moe::testing::Probe> probes{{"logits", z.data(), std::vector<double>(g.data(), g.data() + g.size())}};
    auto f = [&] { return static_cast<double>(loss.forward(z, y, wv)); };
    auto r = moe::testing::check_gradients(f, probes);
    INFO(r.worst);
    return r.max_error;
}
Matrix<double> unit_labels(Index rows, Index cols, std::uint64_t seed) {
    return ((random_matrix(rows, cols, seed).array() + 1.0) / 2.0).matrix();
}
Matrix<double> weights_with_zeros(Index cols) {
    Matrix<double> w = ((random_matrix(1, cols, 77).array() + 1.0)).matrix();
    w(0, 1) = 0.0;  // a masked sample
    return w;
}
}  // namespace

TEST_CASE("Losses: gradients, plain, weighted and masked", "[losses][gradcheck]") {
    const Matrix<double> z = 3.0 * random_matrix(2, 6, 1);
    const Matrix<double> none;
    const Matrix<double> w = weights_with_zeros(6);
    BCEWithLogitsLoss<double> bce;
    MSELoss<double> mse;
    HuberLoss<double> huber(0.5);
    const Matrix<double> yb = unit_labels(2, 6, 2);
    const Matrix<double> yr = 2.0 * random_matrix(2, 6, 3);
    for (const Matrix<double>* wp : {&none, &w}) {
        CHECK(gradcheck_loss(bce, z, yb, *wp) < 1e-6);
        CHECK(gradcheck_loss(mse, z, yr, *wp) < 1e-6);
        CHECK(gradcheck_loss(huber, z, yr, *wp) < 1e-6);
    }
    CrossEntropyLoss<double> ce;
    const Matrix<double> zc = 2.0 * random_matrix(4, 6, 4);
    Matrix<double> cls(1, 6);
    cls << 0, 3, 1, 2, 2, 0;
    CHECK(gradcheck_loss(ce, zc, cls, none) < 1e-6);
    CHECK(gradcheck_loss(ce, zc, cls, w) < 1e-6);
}

TEST_CASE("Losses: the mask averages over the counted samples only", "[losses]") {
    MSELoss<double> mse;
    Matrix<double> z(1, 4), y(1, 4), m(1, 4);
    z << 1, 2, 3, 4;
    y << 0, 0, 0, 0;
    m << 1, 0, 1, 0;
    CHECK(mse.forward(z, y, m) == Approx((1.0 + 9.0) / 2.0));
    const Matrix<double> g = mse.backward();
    CHECK(g(0, 1) == 0.0);
    CHECK(g(0, 0) == Approx(2.0 * 1.0 / 2.0));
    Matrix<double> none = Matrix<double>::Zero(1, 4);
    CHECK(mse.forward(z, y, none) == 0.0);  // nothing counted: zero loss and zero gradient
    CHECK(Matrix<double>(mse.backward()).isZero());
}

TEST_CASE("BCE with logits: stable at +-1e4", "[losses]") {
    BCEWithLogitsLoss<double> bce;
    Matrix<double> z(1, 4), y(1, 4);
    z << 1e4, -1e4, 1e4, -1e4;
    y << 1, 0, 0, 1;
    const double l = bce.forward(z, y);
    CHECK(std::isfinite(l));
    CHECK(l == Approx((0.0 + 0.0 + 1e4 + 1e4) / 4.0));
    const Matrix<double> g = bce.backward();
    CHECK(g.allFinite());
    CHECK(g(0, 2) == Approx(0.25));
    BCEWithLogitsLoss<float> bcef;
    Matrix<float> zf = z.cast<float>(), yf = y.cast<float>();
    CHECK(std::isfinite(bcef.forward(zf, yf)));
}

TEST_CASE("Huber: quadratic inside delta, linear outside", "[losses]") {
    HuberLoss<double> h(1.0);
    Matrix<double> z(1, 2), y(1, 2);
    z << 0.5, 3.0;
    y << 0.0, 0.0;
    CHECK(h.forward(z, y) == Approx((0.125 + 2.5) / 2.0));
    CHECK_THROWS_AS(HuberLoss<double>(0.0), config_error);
}

TEST_CASE("Losses: bad labels, weights and shapes", "[losses][errors]") {
    BCEWithLogitsLoss<double> bce;
    Matrix<double> z = Matrix<double>::Zero(1, 3), y(1, 3);
    y << 0, 1.5, 1;
    CHECK_THROWS_AS(bce.forward(z, y), config_error);
    CHECK_THROWS_WITH(bce.forward(z, y), "moe::BCEWithLogitsLoss::forward: label (0, 1) is 1.5, expected a value in [0, 1]");
    y(0, 1) = std::nan("");
    CHECK_THROWS_AS(bce.forward(z, y), config_error);
    MSELoss<double> mse;
    CHECK_THROWS_WITH(mse.forward(z, y), Catch::Matchers::Contains("expected a finite value"));
    Matrix<double> y2 = Matrix<double>::Zero(1, 2);
    CHECK_THROWS_AS(mse.forward(z, y2), shape_error);
    CHECK_THROWS_WITH(mse.forward(z, y2), "moe::MSELoss::forward: targets is 1 x 2, expected 1 x 3");
    Matrix<double> yz = Matrix<double>::Zero(1, 3), w(1, 3);
    w << 1, -1, 1;
    CHECK_THROWS_WITH(mse.forward(z, yz, w), Catch::Matchers::Contains("weight of sample 1 is -1"));
    Matrix<double> w2 = Matrix<double>::Ones(2, 3);
    CHECK_THROWS_AS(mse.forward(z, yz, w2), shape_error);
    CrossEntropyLoss<double> ce;
    Matrix<double> zc = Matrix<double>::Zero(3, 2), c(1, 2);
    c << 0, 3;
    CHECK_THROWS_WITH(ce.forward(zc, c), "moe::CrossEntropyLoss::forward: class label of sample 1 is 3, expected an integer in [0, 2]");
    c << 0, 1.5;
    CHECK_THROWS_AS(ce.forward(zc, c), config_error);
}

TEST_CASE("Losses: normalised by the counted samples or by the whole batch", "[losses]") {
    const Matrix<double> z = 3.0 * random_matrix(1, 8, 4);
    const Matrix<double> y = unit_labels(1, 8, 5).array().round().matrix();
    Matrix<double> mask = Matrix<double>::Ones(1, 8);
    mask(0, 2) = mask(0, 5) = mask(0, 6) = 0;  // 5 of 8 counted
    BCEWithLogitsLoss<double> counted, batch;
    batch.set_normalization(LossNormalization::batch);
    const double lc = counted.forward(z, y, mask), lb = batch.forward(z, y, mask);
    CHECK(lb == Approx(lc * 5.0 / 8.0).epsilon(1e-14));  // PyTorch's (l * mask).sum() / B
    const Matrix<double> gc = counted.backward(), gb = batch.backward();
    CHECK((gb - gc * 5.0 / 8.0).cwiseAbs().maxCoeff() < 1e-15);
    CHECK(gradcheck_loss(batch, z, y, mask) < 1e-6);
    CrossEntropyLoss<double> ce_batch;
    ce_batch.set_normalization(LossNormalization::batch);
    CHECK(gradcheck_loss(ce_batch, 2.0 * random_matrix(3, 8, 6), Matrix<double>::Zero(1, 8), mask) < 1e-6);

    // Per task in a MultiTaskLoss: the masked task divides by the batch, the other by its count.
    const std::vector<TaskSpec> tasks = {binary_task("click"), binary_task("like")};
    TaskLoss by_batch;
    by_batch.normalization = LossNormalization::batch;
    MultiTaskLoss<double> mixed(tasks, {TaskLoss{}, by_batch});
    Matrix<double> labels(2, 8), masks(2, 8);
    labels << y, y;
    masks << mask, mask;
    const Matrix<double> logits = z;
    mixed.forward({ConstView<double>(logits), ConstView<double>(logits)}, labels, masks);
    CHECK(mixed.task_loss(0) == Approx(lc));
    CHECK(mixed.task_loss(1) == Approx(lb));
}

TEST_CASE("MultiTaskLoss: a loss kind that does not fit the task is refused", "[losses][errors]") {
    CHECK_THROWS_WITH(MultiTaskLoss<double>({regression_task("watch")}, {TaskLoss{LossKind::bce}}),
                      Contains("task 'watch' is regression; BCE goes with binary tasks"));
    CHECK_THROWS_WITH(MultiTaskLoss<double>({binary_task("click")}, {TaskLoss{LossKind::mse}}),
                      Contains("MSE and Huber go with regression tasks"));
}

}  // namespace test_losses
