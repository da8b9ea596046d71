// After the first step at a batch size, forward + loss + backward + optimizer step allocate nothing,
// and a smaller batch after a larger one does not allocate either (buffers only grow).
#include "support/alloc_counter.hpp"
#include "support/catch.hpp"

#include "moe/moe.hpp"

// Everything below in the file's own namespace: the file is part of the unity-built test program.
namespace test_allocations {

using namespace moe;

namespace {
template <class T>
struct Trainer {
    Model<MLP<T>> mlp;
    BCEWithLogitsLoss<T> loss;
    Adam<T> adam;
    explicit Trainer(const MLPSpec& spec) : mlp(spec, 1) {}
    T step(const Matrix<T>& x, const Matrix<T>& y, const Matrix<T>& w) {
        mlp.zero_grad();
        const auto& logits = mlp.forward(x);
        const T l = loss.forward(logits, y, w);
        mlp.backward(loss.backward(), false);
        clip_grad_norm(mlp.params(), 5.0);
        adam.step(mlp.params());
        return l;
    }
};
}  // namespace

TEMPLATE_TEST_CASE("Training step: no allocation after the first step at a batch size", "[alloc]", float, double) {
    using T = TestType;
    MLPSpec spec{{64, 256, 128, 1}};
    spec.batchnorm = true;
    spec.dropout = 0.1;
    spec.activation = ActivationKind::gelu;
    Trainer<T> tr(spec);
    Rng rng(1);
    auto make = [&](Index b) {
        Matrix<T> x(64, b), y(1, b), w(1, b);
        for (Index i = 0; i < x.size(); ++i) x.data()[i] = T(rng.normal());
        for (Index i = 0; i < b; ++i) y(0, i) = T(rng.uniform() < 0.5), w(0, i) = T(rng.uniform() < 0.8);
        return std::make_tuple(x, y, w);
    };
    auto [x, y, w] = make(512);
    auto [xs, ys, ws] = make(100);
    tr.step(x, y, w);  // first step: buffers and Adam moments are allocated
    const long before = moe::testing::allocations();
    for (int i = 0; i < 3; ++i) tr.step(x, y, w);
    tr.step(xs, ys, ws);  // smaller batch: reuses the grown buffers
    tr.step(x, y, w);
    const long during = moe::testing::allocations() - before;
    CHECK(during == 0);
}

TEST_CASE("The allocation counter counts Eigen and new", "[alloc]") {
    const long before = moe::testing::allocations();
    Matrix<float> m(100, 100);
    std::vector<int> v(10);
    // Keep both alive past the count: clang may elide an allocation whose memory is never used.
    volatile float* keep_m = m.data();
    volatile int* keep_v = v.data();
    (void)keep_m;
    (void)keep_v;
    CHECK(moe::testing::allocations() - before == 2);
    CHECK(m.data() != nullptr);
    CHECK(v.size() == 10);
}

TEST_CASE("MLP inference into caller buffers allocates nothing", "[alloc]") {
    Model<MLP<float>> mlp(MLPSpec{{32, 64, 8}}, 2);
    mlp.eval();
    Matrix<float> x = Matrix<float>::Random(32, 300);
    Buffer<float> a, b;
    mlp.infer(x, a, b);
    const long before = moe::testing::allocations();
    for (int i = 0; i < 3; ++i) mlp.infer(x, a, b);
    CHECK(moe::testing::allocations() - before == 0);
}

/// Allocations of two training steps (loss, backward, clipping, Adam) and three predicts of a
/// multi-task model after one of each at the same batch size.
template <class M>
long steady_state_allocations(Model<M>& model, MultiTaskLoss<float>& loss) {
    const Index in = model.in_features();
    Adam<float> adam(AdamOptions{});
    Rng rng(2);
    Matrix<float> x(in, 300), y(3, 300), mask = Matrix<float>::Ones(3, 300);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = float(rng.normal());
    for (Index j = 0; j < 300; ++j) y.col(j) << float(rng.below(2)), float(rng.uniform()), float(rng.below(3));
    for (Index j = 0; j < 300; j += 2) mask(0, j) = 0;
    auto step = [&] {
        model.zero_grad();
        loss.zero_grad();
        loss.forward(model.forward(x), y, mask);
        model.backward(loss.backward());
        clip_grad_norm(model.params(), 1.0);
        adam.step(model.params());
    };
    InferenceWorkspace<float> ws;
    model.train();
    step();
    model.predict(x, ws);
    const long before = moe::testing::allocations();
    for (int i = 0; i < 2; ++i) step();
    model.eval();
    for (int i = 0; i < 3; ++i) model.predict(x, ws);
    return moe::testing::allocations() - before;
}

std::vector<TaskSpec> three_tasks() {
    return {binary_task("click"), regression_task("watch"), multiclass_task("rating", 3)};
}

TEST_CASE("MMoE: training steps and predict allocate nothing after the first call at a batch size", "[alloc]") {
    MMoESpec s;
    s.input = 16;
    s.experts = 4;
    s.expert_hidden = {32};
    s.expert_dim = 16;
    s.tower_hidden = {8};
    s.batchnorm = true;
    s.tower_dropout = 0.1;
    s.tasks = three_tasks();
    Model<MMoE<float>> model(s, 1);
    MultiTaskLoss<float> loss(s.tasks);
    CHECK(steady_state_allocations(model, loss) == 0);
}

TEST_CASE("PLE, CGC: training steps (uncertainty weighting) and predict allocate nothing in steady state", "[alloc]") {
    PLESpec s;
    s.input = 16;
    s.levels = {PLELevelSpec{2, 2, {24}, 12}, PLELevelSpec{2, 1, {}, 8}};
    s.tower_hidden = {8};
    s.batchnorm = true;
    s.expert_dropout = 0.1;
    s.tasks = three_tasks();
    Model<PLE<float>> ple(s, 1);
    MultiTaskLoss<float> loss(s.tasks, {}, TaskWeighting::uncertainty);
    CHECK(steady_state_allocations(ple, loss) == 0);
    s.levels.pop_back();
    Model<CGC<float>> cgc(s, 2);
    CHECK(steady_state_allocations(cgc, loss) == 0);
}

TEST_CASE("SparseMoE: forward and backward allocate nothing in steady state", "[alloc]") {
    SparseMoESpec s;
    s.dim = 16;
    s.ffn = 32;
    s.experts = 8;
    s.k = 2;
    s.noisy = true;
    s.capacity_factor = 1.0;
    s.balance_coef = s.importance_coef = s.load_coef = s.z_coef = 0.01;
    Model<SparseMoE<float>> model(s, 1);
    Adam<float> adam(AdamOptions{});
    Rng rng(2);
    Matrix<float> x(16, 256), dy(16, 256);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = float(rng.normal()), dy.data()[i] = float(rng.normal());
    auto step = [&] {
        model.zero_grad();
        model.forward(x);
        model.backward(dy);
        adam.step(model.params());
    };
    step();
    const long before = moe::testing::allocations();
    for (int i = 0; i < 3; ++i) step();
    CHECK(moe::testing::allocations() - before == 0);
}

TEST_CASE("rank_candidates with the caller's workspace allocates nothing in steady state", "[alloc][serve]") {
    MMoESpec s;
    s.input = 16;
    s.experts = 4;
    s.expert_hidden = {32};
    s.expert_dim = 16;
    s.tower_hidden = {8};
    s.batchnorm = true;
    s.tasks = {binary_task("click"), regression_task("watch"), binary_task("like")};
    Model<MMoE<float>> model(s, 1);
    model.eval();
    const Matrix<float> candidates = Matrix<float>::Random(16, 300);
    const std::map<std::string, double> weights = {{"click", 1.0}, {"watch", 0.2}, {"like", -0.5}};
    InferenceWorkspace<float> ws;
    Ranking<float> ranking;
    rank_candidates(model, candidates, weights, ws, ranking);
    const long before = moe::testing::allocations();
    for (int i = 0; i < 3; ++i) rank_candidates(model, candidates, weights, ws, ranking);
    CHECK(moe::testing::allocations() - before == 0);
}

}  // namespace test_allocations
