// After the first step at a batch size, forward + loss + backward + optimizer step allocate nothing,
// and a smaller batch after a larger one does not allocate either (buffers only grow; an MLP that
// switches between column blocks and layer by layer: once both have run, see docs/design.md).
#include <utility>

#include "support/alloc_counter.hpp"
#include "support/catch.hpp"
#include "support/forced_threads.hpp"

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

namespace {
/// Allocations of steps at batch 512, then 100, then 512 again, after a first step at 512.
template <class T>
long allocations_of_steps() {
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
    return moe::testing::allocations() - before;
}
}  // namespace

TEMPLATE_TEST_CASE("Training step: no allocation after the first step at a batch size", "[alloc]", float, double) {
    CHECK(allocations_of_steps<TestType>() == 0);
}

#ifdef _OPENMP
TEST_CASE("Training step on 3 threads, every loop threaded: no allocation either", "[alloc][threads]") {
    // Loops of 2 chunks and of 3 or more alternate: every parallel region must reuse one team.
    moe::testing::ForcedThreads three(3);
    CHECK(allocations_of_steps<float>() == 0);
}
#endif

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

/// A batch of 300 samples of `in` features with labels for three_tasks().
std::pair<Matrix<float>, Matrix<float>> three_task_batch(Index in) {
    Rng rng(2);
    Matrix<float> x(in, 300), y(3, 300);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = float(rng.normal());
    for (Index j = 0; j < 300; ++j) y.col(j) << float(rng.below(2)), float(rng.uniform()), float(rng.below(3));
    return {x, y};
}

/// Allocations of two training steps (loss, backward, clipping, Adam) and three predicts of a
/// multi-task model after one of each at the same batch size.
template <class M>
long steady_state_allocations(Model<M>& model, MultiTaskLoss<float>& loss, const std::vector<Index>& surfaces = {}) {
    Adam<float> adam(AdamOptions{});
    const auto batch = three_task_batch(model.in_features());  // (no structured binding: lambdas capture x and y)
    const Matrix<float>& x = batch.first;
    const Matrix<float>& y = batch.second;
    Matrix<float> mask = Matrix<float>::Ones(3, 300);
    for (Index j = 0; j < 300; j += 2) mask(0, j) = 0;
    auto step = [&] {
        model.zero_grad();
        loss.zero_grad();
        loss.forward(surfaces.empty() ? model.forward(x) : model.forward(x, surfaces), y, mask);
        model.backward(loss.backward());
        clip_grad_norm(model.params(), 1.0);
        adam.step(model.params());
    };
    auto predict = [&](InferenceWorkspace<float>& ws) { surfaces.empty() ? model.predict(x, ws) : model.predict(x, ws, surfaces); };
    InferenceWorkspace<float> ws;
    model.train();
    step();
    predict(ws);
    const long before = moe::testing::allocations();
    for (int i = 0; i < 2; ++i) step();
    model.eval();
    for (int i = 0; i < 3; ++i) predict(ws);
    return moe::testing::allocations() - before;
}

std::vector<TaskSpec> three_tasks() {
    return {binary_task("click"), regression_task("watch"), multiclass_task("rating", 3)};
}

/// An MMoE of three tasks, with BatchNorm and tower dropout or without (its MLPs in column blocks).
MMoESpec small_mmoe(bool batchnorm_and_dropout) {
    MMoESpec s;
    s.input = 16;
    s.experts = 4;
    s.expert_hidden = {32};
    s.expert_dim = 16;
    s.tower_hidden = {8};
    s.batchnorm = batchnorm_and_dropout;
    s.tower_dropout = batchnorm_and_dropout ? 0.1 : 0.0;
    s.tasks = three_tasks();
    return s;
}

TEST_CASE("MMoE: training steps and predict allocate nothing after the first call at a batch size", "[alloc]") {
    MMoESpec s = small_mmoe(true);
    Model<MMoE<float>> model(s, 1);
    MultiTaskLoss<float> loss(s.tasks);
    CHECK(steady_state_allocations(model, loss) == 0);
    // Without BatchNorm and dropout the experts train in column blocks (300 samples: 3 blocks).
    Model<MMoE<float>> blocked(small_mmoe(false), 1);
    CHECK(steady_state_allocations(blocked, loss) == 0);
    // A tower tree: samples gathered by surface in training and predict.
    s.surfaces = 3;
    Model<MMoE<float>> tree(s, 1);
    std::vector<Index> surfaces(300);
    for (std::size_t j = 0; j < surfaces.size(); ++j) surfaces[j] = Index(j * 7 % 3);
    CHECK(steady_state_allocations(tree, loss, surfaces) == 0);
}

TEST_CASE("MMoE: steps alternating between column blocks and layer by layer allocate nothing", "[alloc]") {
    Model<MMoE<float>> model(small_mmoe(false), 1);
    MultiTaskLoss<float> loss(three_tasks());
    const auto batch = three_task_batch(16);
    const Matrix<float>& x = batch.first;
    const Matrix<float>& y = batch.second;
    const Matrix<float> xs = x.leftCols(100), ys = y.leftCols(100);
    auto step = [&](const Matrix<float>& xb, const Matrix<float>& yb) {
        model.zero_grad();
        loss.forward(model.forward(xb), yb);
        model.backward(loss.backward());
    };
    model.train();
    step(x, y);    // the experts' ReLUs write their outputs over the linear outputs here,
    step(xs, ys);  // and into their own buffers here (the first small step may grow per-thread
    step(x, y);    // GEMM workspaces: docs/design.md, "No allocation in steady state")
    const long before = moe::testing::allocations();
    for (int i = 0; i < 2; ++i) {
        step(xs, ys);
        step(x, y);
    }
    CHECK(moe::testing::allocations() - before == 0);
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
    for (bool expert_choice : {false, true}) {  // noisy top-2 with MLP experts; expert choice with SwiGLU experts
        INFO("expert choice " << expert_choice);
        SparseMoESpec s;
        s.dim = 16;
        s.ffn = 32;
        s.experts = 8;
        s.k = 2;
        s.noisy = !expert_choice;
        s.capacity_factor = 1.0;
        s.balance_coef = s.importance_coef = s.load_coef = expert_choice ? 0.0 : 0.01;
        s.z_coef = 0.01;
        if (expert_choice) {
            s.routing = Routing::expert_choice;
            s.expert = ExpertKind::swiglu;
        }
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
}

TEST_CASE("FeatureModel: steps with other ids each batch allocate nothing in steady state", "[alloc][features]") {
    for (bool attention : {false, true}) {  // the history by mean, or by target attention against the item
        INFO("attention " << attention);
        FeatureSpec f;
        f.dense = 4;
        f.add_table("items", 1000, 8).add_table("users", 300, 8);
        f.add_feature("item_id", "items");
        if (attention)
            f.add_attention_feature("recent_items", "items", "item_id", 0, {6});
        else
            f.add_feature("recent_items", "items", PoolingMode::mean);
        f.add_feature("user_id", "users");
        MMoESpec s;
        s.experts = 3;
        s.expert_hidden = {16};
        s.expert_dim = 8;
        s.tower_hidden = {4};
        s.tasks = {binary_task("click")};
        FeatureModel<MMoE<float>> model(f, s, 1);
        Adam<float> adam, attention_adam;
        TableOptimizer<float> tables(model.input());
        MultiTaskLoss<float> loss(model.tasks());
        Rng rng(3);
        const Index n = 64;
        // Five batches of the same shape (lengths) with different ids: the tables' gradients touch
        // different numbers of rows each time.
        std::vector<FeatureBatch<float>> batches(5);
        for (std::size_t k = 0; k < batches.size(); ++k) {
            FeatureBatch<float>& b = batches[k];
            b.dense = Matrix<float>::Random(4, n);
            std::vector<std::int64_t> items, recent, users, ones(std::size_t(n), 1), fives(std::size_t(n), 5);
            const std::int64_t spread = k == 0 ? 10 : 1000;  // the first batch repeats ids: few rows
            for (Index i = 0; i < n; ++i) items.push_back(std::int64_t(rng.uniform() * double(spread)) % 1000);
            for (Index i = 0; i < 5 * n; ++i) recent.push_back(std::int64_t(rng.uniform() * double(spread)) % 1000);
            for (Index i = 0; i < n; ++i) users.push_back(std::int64_t(rng.uniform() * 300.0) % 300);
            b.sparse["item_id"] = Bags<float>::from_lengths(items, ones);
            b.sparse["recent_items"] = Bags<float>::from_lengths(recent, fives);
            b.sparse["user_id"] = Bags<float>::from_lengths(users, ones);
        }
        Matrix<float> y(1, n);
        for (Index i = 0; i < n; ++i) y(0, i) = float(rng.uniform() < 0.5);
        auto step = [&](const FeatureBatch<float>& b) {
            loss.forward(model.forward(b), y);
            model.zero_grad();
            model.backward(loss.backward());
            adam.step(model.params());
            if (attention) attention_adam.step(model.input().attention_params());
            tables.step(model.input());
        };
        FeatureWorkspace<float> ws;
        step(batches[0]);
        model.predict(batches[0], ws);
        const long before = moe::testing::allocations();
        for (std::size_t k = 1; k < batches.size(); ++k) step(batches[k]);
        for (std::size_t k = 0; k < batches.size(); ++k) model.predict(batches[k], ws);
        CHECK(moe::testing::allocations() - before == 0);
    }
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
