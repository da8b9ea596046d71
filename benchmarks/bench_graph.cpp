// A model written as a YAML graph against the same model built by hand, float32, in one run:
// the corrected MMoE of tests/fixtures/graph/mmoe_corrected.yaml (3 experts Linear(20, 64)-ReLU,
// 2 softmax gates, towers 64 -> 32 -> 1, click binary and watch regression) and MMoE<float> with
// the same spec (8384 parameters both).
//
//   graph_mmoe_train/batch:B/threads:N   GraphModel: forward, MultiTaskLoss, backward, Adam step
//   hand_mmoe_train/batch:B/threads:N    MMoE<float>: the same step
//   graph_mmoe_infer/batch:B/threads:N   predict() into a reused workspace
//   hand_mmoe_infer/batch:B/threads:N
//
// The graph's five Linears on the features run fused as one GEMM (graph/fused_linear.hpp); the
// issue's target is a training step within 1.15x of the hand-built model's.
#include <moe/graph/graph_model.hpp>

#include "bench_common.hpp"

namespace {

using T = float;

moe::MMoESpec hand_spec() {
    moe::MMoESpec s;
    s.input = 20;
    s.experts = 3;
    s.expert_dim = 64;
    s.tower_hidden = {32};
    s.tasks = {moe::binary_task("click"), moe::regression_task("watch")};
    return s;
}

moe::graph::GraphModelSpec graph_spec() { return moe::graph::graph_spec_from_file(MOE_GRAPH_FIXTURE); }

moe::Matrix<T> random_batch(moe::Index rows, moe::Index batch, std::uint64_t seed) {
    moe::Rng rng(seed);
    moe::Matrix<T> m(rows, batch);
    for (moe::Index i = 0; i < m.size(); ++i) m.data()[i] = T(rng.normal());
    return m;
}

template <class M, class Spec>
void train(benchmark::State& state, const Spec& spec) {
    if (!moe::bench::set_threads(state, state.range(1))) return;
    const moe::Index batch = state.range(0);
    moe::Model<M> model(spec, 1);
    if (model.params().size() != 8384) state.SkipWithError("the two models differ");
    moe::MultiTaskLoss<T> loss(model.tasks());
    moe::Adam<T> adam{moe::AdamOptions{}};
    const moe::Matrix<T> x = random_batch(20, batch, 2);
    moe::Matrix<T> y(2, batch);
    moe::Rng rng(3);
    for (moe::Index j = 0; j < batch; ++j) {
        y(0, j) = T(rng.below(2));
        y(1, j) = T(rng.uniform());
    }
    model.train();
    for (auto _ : state) {
        model.zero_grad();
        benchmark::DoNotOptimize(loss.forward(model.forward(x), y));
        model.backward(loss.backward());
        adam.step(model.params());
    }
    state.SetItemsProcessed(state.iterations() * batch);
}
void graph_mmoe_train(benchmark::State& state) { train<moe::graph::GraphModel<T>>(state, graph_spec()); }
void hand_mmoe_train(benchmark::State& state) { train<moe::MMoE<T>>(state, hand_spec()); }

template <class M, class Spec>
void infer(benchmark::State& state, const Spec& spec) {
    if (!moe::bench::set_threads(state, state.range(1))) return;
    const moe::Index batch = state.range(0);
    moe::Model<M> model(spec, 1);
    model.eval();
    const moe::Matrix<T> x = random_batch(20, batch, 2);
    moe::InferenceWorkspace<T> ws;
    for (auto _ : state) benchmark::DoNotOptimize(model.predict(x, ws).front().data());
    state.SetItemsProcessed(state.iterations() * batch);
}
void graph_mmoe_infer(benchmark::State& state) { infer<moe::graph::GraphModel<T>>(state, graph_spec()); }
void hand_mmoe_infer(benchmark::State& state) { infer<moe::MMoE<T>>(state, hand_spec()); }

void register_all() {
    const auto threads = moe::bench::thread_counts();
    auto add = [&](const char* name, void (*fn)(benchmark::State&), std::vector<std::int64_t> batches) {
        benchmark::RegisterBenchmark(name, fn)
            ->ArgNames({"batch", "threads"})
            ->ArgsProduct({batches, threads})
            ->UseRealTime();
    };
    add("graph_mmoe_train", graph_mmoe_train, {256, 2048});
    add("hand_mmoe_train", hand_mmoe_train, {256, 2048});
    add("graph_mmoe_infer", graph_mmoe_infer, {300});
    add("hand_mmoe_infer", hand_mmoe_infer, {300});
}

}  // namespace

int main(int argc, char** argv) { return moe::bench::run_benchmarks(argc, argv, register_all); }
