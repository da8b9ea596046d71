// Core kernels: Linear forward/backward next to a plain Eigen GEMM of the same shape, and the Adam
// step. items_per_second is samples/s (Linear) or parameters/s (Adam); GFLOP/s is reported as a
// counter so that Linear and the bare GEMM can be compared in one run.
#include <benchmark/benchmark.h>

#include <moe/moe.hpp>

namespace {

constexpr moe::Index kIn = 256, kOut = 256;

void set_flops(benchmark::State& state, double flops_per_iter) {
    state.counters["GFLOP/s"] =
        benchmark::Counter(flops_per_iter * double(state.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}

void linear_forward(benchmark::State& state) {
    const moe::Index batch = state.range(0);
    moe::Linear<float> lin(kIn, kOut);
    moe::ParameterStore<float> store;
    store.bind(lin);
    moe::Rng rng(1);
    lin.reset_parameters(rng);
    moe::Matrix<float> x = moe::Matrix<float>::Random(kIn, batch);
    for (auto _ : state) benchmark::DoNotOptimize(lin.forward(x).data());
    state.SetItemsProcessed(state.iterations() * batch);
    set_flops(state, 2.0 * kIn * kOut * double(batch));
}

void eigen_gemm(benchmark::State& state) {
    const moe::Index batch = state.range(0);
    moe::Matrix<float> w = moe::Matrix<float>::Random(kOut, kIn), x = moe::Matrix<float>::Random(kIn, batch), y(kOut, batch);
    for (auto _ : state) {
        y.noalias() = w * x;
        benchmark::DoNotOptimize(y.data());
    }
    state.SetItemsProcessed(state.iterations() * batch);
    set_flops(state, 2.0 * kIn * kOut * double(batch));
}

void linear_backward(benchmark::State& state) {
    const moe::Index batch = state.range(0);
    moe::Linear<float> lin(kIn, kOut);
    moe::ParameterStore<float> store;
    store.bind(lin);
    moe::Rng rng(1);
    lin.reset_parameters(rng);
    moe::Matrix<float> x = moe::Matrix<float>::Random(kIn, batch), dy = moe::Matrix<float>::Random(kOut, batch);
    lin.forward(x);
    for (auto _ : state) benchmark::DoNotOptimize(lin.backward(dy).data());
    state.SetItemsProcessed(state.iterations() * batch);
    set_flops(state, 4.0 * kIn * kOut * double(batch));  // dW and dx
}

void adam_step(benchmark::State& state) {
    const moe::Index n = state.range(0);
    moe::Vector<float> p = moe::Vector<float>::Random(n), g = moe::Vector<float>::Random(n);
    moe::AdamOptions o;
    o.weight_decay = 1e-4;
    moe::Adam<float> adam(o);
    for (auto _ : state) {
        adam.step(p, g);
        benchmark::DoNotOptimize(p.data());
    }
    state.SetItemsProcessed(state.iterations() * n);
}

}  // namespace

BENCHMARK(linear_forward)->ArgName("batch")->Arg(32)->Arg(256)->Arg(2048);
BENCHMARK(eigen_gemm)->ArgName("batch")->Arg(32)->Arg(256)->Arg(2048);
BENCHMARK(linear_backward)->ArgName("batch")->Arg(32)->Arg(256)->Arg(2048);
BENCHMARK(adam_step)->ArgName("params")->Arg(1 << 16)->Arg(1 << 20);

BENCHMARK_MAIN();
