// Sparse top-k MoE against the dense mixture with the same experts: N = 4096 tokens, float32,
// experts d -> ffn = 2d -> d (GELU), items_per_second = tokens/s.
//
//   sparse_moe_train/d:D/experts:E/k:K/threads:N   forward + backward, top-k renormalised routing
//   dense_moe_train/d:D/experts:E/threads:N        forward + backward, every expert on every token,
//                                                   softmax-weighted (SparseMoE with k = E)
//   sparse_moe_infer/d:D/experts:E/k:K/threads:N   forward in evaluation mode
//
// Dense rows with 64 experts at d = 512 take seconds per iteration and about 4 GB.
#include <benchmark/benchmark.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <moe/moe.hpp>

namespace {

using T = float;
constexpr moe::Index kTokens = 4096;

moe::SparseMoESpec spec_for(moe::Index d, moe::Index experts, moe::Index k) {
    moe::SparseMoESpec s;
    s.dim = d;
    s.ffn = 2 * d;
    s.experts = experts;
    s.k = k;
    return s;
}

bool set_threads(benchmark::State& state, int threads) {
#ifdef _OPENMP
    (void)state;
    omp_set_num_threads(threads);
    return true;
#else
    if (threads != 1) state.SkipWithError("built without OpenMP");
    return threads == 1;
#endif
}

moe::Matrix<T> random_tokens(moe::Index d, std::uint64_t seed) {
    moe::Rng rng(seed);
    moe::Matrix<T> m(d, kTokens);
    for (moe::Index i = 0; i < m.size(); ++i) m.data()[i] = T(rng.normal());
    return m;
}

void run(benchmark::State& state, moe::Index d, moe::Index experts, moe::Index k, int threads, bool train) {
    if (!set_threads(state, threads)) return;
    moe::Model<moe::SparseMoE<T>> layer(spec_for(d, experts, k), 1);
    layer.set_training(train);
    const moe::Matrix<T> x = random_tokens(d, 2), dy = random_tokens(d, 3);
    for (auto _ : state) {
        benchmark::DoNotOptimize(layer.forward(x).data());
        if (train) {
            layer.zero_grad();
            benchmark::DoNotOptimize(layer.backward(dy).data());
        }
    }
    state.SetItemsProcessed(state.iterations() * kTokens);
    const auto& st = layer.stats();
    state.counters["load_max_over_mean"] = st.load_balance;
}

void sparse_moe_train(benchmark::State& s) { run(s, s.range(0), s.range(1), s.range(2), int(s.range(3)), true); }
void sparse_moe_infer(benchmark::State& s) { run(s, s.range(0), s.range(1), s.range(2), int(s.range(3)), false); }
void dense_moe_train(benchmark::State& s) { run(s, s.range(0), s.range(1), s.range(1), int(s.range(2)), true); }

}  // namespace

BENCHMARK(sparse_moe_train)
    ->ArgNames({"d", "experts", "k", "threads"})
    ->ArgsProduct({{128, 512}, {8, 16, 64}, {1, 2}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(dense_moe_train)
    ->ArgNames({"d", "experts", "threads"})
    ->ArgsProduct({{128, 512}, {8, 16, 64}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(sparse_moe_infer)
    ->ArgNames({"d", "experts", "k", "threads"})
    ->ArgsProduct({{128, 512}, {8, 16, 64}, {1, 2}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
