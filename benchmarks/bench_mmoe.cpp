// MMoE training step and prediction, float32, items_per_second = samples/s. Two models:
//
//   default: input 64, 8 experts 64 -> 256 -> 128 (ReLU, output ReLU), one linear gate per task,
//            towers 128 -> 64 -> 1, tasks binary, binary, regression (the MMoE issue's config)
//   bn:      the tutorial-style MMoE users write: 6 experts Linear-ReLU-BatchNorm-Linear-ReLU
//            64 -> 256 -> 128, towers Linear-ReLU-BatchNorm-Dropout(0.1)-Linear 128 -> 64 -> 1,
//            tasks click, like, finish, dislike (binary) and watch time (regression, ReLU head)
//
//   mmoe_train/batch:B/threads:N        forward, MultiTaskLoss, backward, Adam step
//   mmoe_bn_train/batch:B/threads:N     the same on the bn model
//   mmoe_infer/batch:B/threads:N        predict() into a reused workspace
//   mmoe_bn_infer/batch:B/threads:N
//   mmoe_train_parts/batch:B/threads:1  the training step's forward, backward and Adam timed apart
//   gemm_rate/batch:B/threads:N         a 256 x 256 by 256 x B product through moe's GEMM (the backend
//                                        in use): the machine's GEMM rate in the same run
//   eigen_gemm_256/batch:B/threads:N    the same product by Eigen alone (its own threads)
//
// The GFLOP/s counter counts the multiply-adds of the GEMMs (2 flops each): forward, plus dW and dx
// in training (no dx for the layers that read the input). Thread counts: MOE_BENCH_THREADS.
#include "bench_common.hpp"
#include "bench_specs.hpp"

#include <chrono>

namespace {

using T = float;

moe::MMoESpec default_spec() { return default_mmoe_spec(); }

moe::MMoESpec bn_spec() {
    moe::MMoESpec s = default_spec();
    s.experts = 6;
    s.batchnorm = true;
    s.tower_dropout = 0.1;
    s.tasks = {moe::binary_task("click"), moe::binary_task("like"), moe::binary_task("finish"), moe::binary_task("dislike"),
               moe::regression_task("watch", /*relu_output=*/true)};
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
double train_flops(const moe::MMoESpec& s) {
    const Macs m = count_macs(s);
    return 2.0 * (3 * m.forward - m.input_layers);
}

moe::Matrix<T> random_batch(moe::Index rows, moe::Index batch, std::uint64_t seed) {
    moe::Rng rng(seed);
    moe::Matrix<T> m(rows, batch);
    for (moe::Index i = 0; i < m.size(); ++i) m.data()[i] = T(rng.normal());
    return m;
}

/// A model, loss, optimizer and one batch: what a training step needs.
struct TrainSetup {
    moe::MMoESpec spec;
    moe::Model<moe::MMoE<T>> model;
    moe::MultiTaskLoss<T> loss;
    moe::Adam<T> adam{moe::AdamOptions{}};
    moe::Matrix<T> x, y;

    TrainSetup(const moe::MMoESpec& s, moe::Index batch)
        : spec(s), model(s, 1), loss(s.tasks), x(random_batch(s.input, batch, 2)), y(moe::Index(s.tasks.size()), batch) {
        moe::Rng rng(3);
        for (moe::Index j = 0; j < batch; ++j)
            for (moe::Index t = 0; t < y.rows(); ++t)
                y(t, j) = s.tasks[std::size_t(t)].kind == moe::TaskKind::binary ? T(rng.below(2)) : T(rng.uniform());
        model.train();
    }
    void step() {
        model.zero_grad();
        benchmark::DoNotOptimize(loss.forward(model.forward(x), y));
        model.backward(loss.backward());
        adam.step(model.params());
    }
};

void train(benchmark::State& state, const moe::MMoESpec& spec) {
    if (!moe::bench::set_threads(state, state.range(1))) return;
    TrainSetup t(spec, state.range(0));
    for (auto _ : state) t.step();
    state.SetItemsProcessed(state.iterations() * t.x.cols());
    moe::bench::set_flops(state, train_flops(spec) * double(t.x.cols()));
}
void mmoe_train(benchmark::State& state) { train(state, default_spec()); }
void mmoe_bn_train(benchmark::State& state) { train(state, bn_spec()); }

void infer(benchmark::State& state, const moe::MMoESpec& spec) {
    if (!moe::bench::set_threads(state, state.range(1))) return;
    const moe::Index batch = state.range(0);
    moe::Model<moe::MMoE<T>> model(spec, 1);
    model.eval();
    const moe::Matrix<T> x = random_batch(spec.input, batch, 2);
    moe::InferenceWorkspace<T> ws;
    for (auto _ : state) benchmark::DoNotOptimize(model.predict(x, ws).front().data());
    state.SetItemsProcessed(state.iterations() * batch);
    moe::bench::set_flops(state, 2.0 * count_macs(spec).forward * double(batch));
}
void mmoe_infer(benchmark::State& state) { infer(state, default_spec()); }
void mmoe_bn_infer(benchmark::State& state) { infer(state, bn_spec()); }

/// The training step timed part by part (steady_clock around each call), to show where the time
/// goes: counters forward_us, backward_us, adam_us per step.
void mmoe_train_parts(benchmark::State& state) {
    if (!moe::bench::set_threads(state, state.range(1))) return;
    TrainSetup t(default_spec(), state.range(0));
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

/// moe's GEMM (whichever backend is compiled in) on 256 x 256 by 256 x B: the rate to compare a
/// training step's GFLOP/s with.
void gemm_rate(benchmark::State& state) {
    if (!moe::bench::set_threads(state, state.range(1))) return;
    const moe::Index batch = state.range(0);
    const moe::Matrix<T> w = random_batch(256, 256, 1), x = random_batch(256, batch, 2);
    moe::Matrix<T> y(256, batch);
    for (auto _ : state) {
        moe::detail::gemm<T>(false, false, 256, batch, 256, T(1), w.data(), 256, x.data(), 256, false, y.data(), 256);
        benchmark::DoNotOptimize(y.data());
    }
    moe::bench::set_flops(state, 2.0 * 256 * 256 * double(batch));
}

/// A plain Eigen product (Eigen's own threads) of the same shape, kept for comparison with earlier runs.
void eigen_gemm_256(benchmark::State& state) {
    if (!moe::bench::set_threads(state, state.range(1))) return;
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
    moe::bench::set_flops(state, 2.0 * 256 * 256 * double(batch));
}

void register_all() {
    const auto threads = moe::bench::thread_counts();
    auto add = [&](const char* name, void (*fn)(benchmark::State&), std::vector<std::int64_t> batches, bool threaded) {
        benchmark::RegisterBenchmark(name, fn)
            ->ArgNames({"batch", "threads"})
            ->ArgsProduct({batches, threaded ? threads : std::vector<std::int64_t>{1}})
            ->UseRealTime();
    };
    add("mmoe_train", mmoe_train, {32, 256, 2048, 8192}, true);
    add("mmoe_bn_train", mmoe_bn_train, {32, 256, 2048}, true);
    add("mmoe_train_parts", mmoe_train_parts, {256, 2048}, false);
    add("mmoe_infer", mmoe_infer, {32, 300, 2048}, true);
    add("mmoe_bn_infer", mmoe_bn_infer, {300}, true);
    add("gemm_rate", gemm_rate, {32, 256, 2048}, true);
    add("eigen_gemm_256", eigen_gemm_256, {32, 256, 2048}, true);
}

}  // namespace

int main(int argc, char** argv) { return moe::bench::run_benchmarks(argc, argv, register_all); }
