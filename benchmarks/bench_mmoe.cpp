// MMoE training step and prediction on the default benchmark config: input 64, 8 experts of
// 64 -> 256 -> 128 (ReLU, output ReLU), one linear gate per task, towers 128 -> 64 -> 1, tasks
// binary, binary, regression. float32. items_per_second = samples/s.
//
//   mmoe_train/batch:B/threads:N   forward, MultiTaskLoss, backward, Adam step
//   mmoe_infer/batch:B/threads:N   predict() into a reused workspace
//   mmoe_train_parts/batch:B/threads:1  the training step's forward, backward and Adam timed apart
//   eigen_gemm_256/batch:B/threads:N  a plain Eigen GEMM (256 x 256 times 256 x B) for the GFLOP/s reference
//
// The GFLOP/s counter counts the multiply-adds of the GEMMs (2 per MAC): forward, plus dW and dx in
// training (no dx for the layers that read the input).
#include <benchmark/benchmark.h>

#include <chrono>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <moe/moe.hpp>

namespace {

using T = float;

moe::MMoESpec default_spec() {
    moe::MMoESpec s;
    s.input = 64;
    s.experts = 8;
    s.expert_hidden = {256};
    s.expert_dim = 128;
    s.tower_hidden = {64};
    s.tasks = {moe::binary_task("click"), moe::binary_task("like"), moe::regression_task("watch")};
    return s;
}

/// Multiply-adds per sample of the forward GEMMs, and of those reading the input (no dx there).
struct Macs {
    double forward = 0, input_layers = 0;
};
Macs count_macs(const moe::MMoESpec& s) {
    Macs m;
    const double e = double(s.experts), t = double(s.tasks.size());
    const double first = double(s.input) * double(s.expert_hidden[0]) * e + double(s.input) * e * t;
    m.input_layers = first;
    m.forward = first + double(s.expert_hidden[0]) * double(s.expert_dim) * e + double(s.expert_dim) * e * t +
                t * (double(s.expert_dim) * double(s.tower_hidden[0]) + double(s.tower_hidden[0]));
    return m;
}

void set_threads(benchmark::State& state) {
#ifdef _OPENMP
    omp_set_num_threads(static_cast<int>(state.range(1)));
#else
    if (state.range(1) != 1) state.SkipWithError("built without OpenMP");
#endif
}

void set_rate(benchmark::State& state, moe::Index batch, double flops_per_sample) {
    state.SetItemsProcessed(state.iterations() * batch);
    state.counters["GFLOP/s"] = benchmark::Counter(flops_per_sample * double(batch) * double(state.iterations()) * 1e-9,
                                                   benchmark::Counter::kIsRate);
}

moe::Matrix<T> random_batch(moe::Index rows, moe::Index batch, std::uint64_t seed) {
    moe::Rng rng(seed);
    moe::Matrix<T> m(rows, batch);
    for (moe::Index i = 0; i < m.size(); ++i) m.data()[i] = T(rng.normal());
    return m;
}

/// A model, loss, optimizer and one batch of the default config: what a training step needs.
struct TrainSetup {
    moe::MMoESpec spec = default_spec();
    moe::Model<moe::MMoE<T>> model{spec, 1};
    moe::MultiTaskLoss<T> loss{spec.tasks};
    moe::Adam<T> adam{moe::AdamOptions{}};
    moe::Matrix<T> x, y;

    explicit TrainSetup(moe::Index batch) : x(random_batch(spec.input, batch, 2)), y(3, batch) {
        moe::Rng rng(3);
        for (moe::Index j = 0; j < batch; ++j) y.col(j) << T(rng.below(2)), T(rng.below(2)), T(rng.uniform());
    }
    void step() {
        model.zero_grad();
        benchmark::DoNotOptimize(loss.forward(model.forward(x), y));
        model.backward(loss.backward());
        adam.step(model.params());
    }
};

void mmoe_train(benchmark::State& state) {
    set_threads(state);
    TrainSetup t(state.range(0));
    for (auto _ : state) t.step();
    const Macs m = count_macs(t.spec);
    set_rate(state, t.x.cols(), 2.0 * (3 * m.forward - m.input_layers));
}

/// The training step timed part by part (steady_clock around each call), to show where the time
/// goes: counters forward_us, backward_us, adam_us per step.
void mmoe_train_parts(benchmark::State& state) {
    set_threads(state);
    TrainSetup t(state.range(0));
    using Clock = std::chrono::steady_clock;
    double fwd = 0, bwd = 0, opt = 0;
    for (auto _ : state) {
        t.model.zero_grad();
        const auto t0 = Clock::now();
        benchmark::DoNotOptimize(t.loss.forward(t.model.forward(t.x), t.y));
        const auto t1 = Clock::now();
        t.model.backward(t.loss.backward());
        const auto t2 = Clock::now();
        t.adam.step(t.model.params());
        const auto t3 = Clock::now();
        fwd += std::chrono::duration<double>(t1 - t0).count();
        bwd += std::chrono::duration<double>(t2 - t1).count();
        opt += std::chrono::duration<double>(t3 - t2).count();
    }
    const double n = double(state.iterations());
    state.counters["forward_us"] = fwd / n * 1e6;
    state.counters["backward_us"] = bwd / n * 1e6;
    state.counters["adam_us"] = opt / n * 1e6;
    state.SetItemsProcessed(state.iterations() * t.x.cols());
}

void mmoe_infer(benchmark::State& state) {
    set_threads(state);
    const moe::Index batch = state.range(0);
    const auto spec = default_spec();
    moe::Model<moe::MMoE<T>> model(spec, 1);
    model.eval();
    const moe::Matrix<T> x = random_batch(spec.input, batch, 2);
    moe::InferenceWorkspace<T> ws;
    for (auto _ : state) benchmark::DoNotOptimize(model.predict(x, ws).front().data());
    set_rate(state, batch, 2.0 * count_macs(spec).forward);
}

void eigen_gemm_256(benchmark::State& state) {
    set_threads(state);
#ifdef _OPENMP
    Eigen::setNbThreads(static_cast<int>(state.range(1)));
#endif
    const moe::Index batch = state.range(0);
    const moe::Matrix<T> w = random_batch(256, 256, 1), x = random_batch(256, batch, 2);
    moe::Matrix<T> y(256, batch);
    for (auto _ : state) {
        y.noalias() = w * x;
        benchmark::DoNotOptimize(y.data());
    }
    state.counters["GFLOP/s"] = benchmark::Counter(2.0 * 256 * 256 * double(batch) * double(state.iterations()) * 1e-9,
                                                   benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(mmoe_train)->ArgNames({"batch", "threads"})->ArgsProduct({{32, 256, 2048}, {1, 2}})->UseRealTime();
BENCHMARK(mmoe_train_parts)->ArgNames({"batch", "threads"})->ArgsProduct({{256, 2048}, {1}})->UseRealTime();
BENCHMARK(mmoe_infer)->ArgNames({"batch", "threads"})->ArgsProduct({{32, 300, 2048}, {1, 2}})->UseRealTime();
BENCHMARK(eigen_gemm_256)->ArgNames({"batch", "threads"})->ArgsProduct({{32, 256, 2048}, {1, 2}})->UseRealTime();

BENCHMARK_MAIN();
