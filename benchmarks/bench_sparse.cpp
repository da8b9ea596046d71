// Sparse top-k MoE against the dense mixture with the same experts: N = 4096 tokens, float32,
// experts d -> ffn = 2d -> d (GELU), items_per_second = tokens/s.
//
//   sparse_moe_train/d:D/experts:E/k:K/threads:N   forward + backward, top-k renormalised routing
//   dense_moe_train/d:D/experts:E/threads:N        forward + backward, every expert on every token,
//                                                   softmax-weighted (SparseMoE with k = E)
//   sparse_moe_infer/d:D/experts:E/k:K/threads:N   forward in evaluation mode
//
// Dense rows with 64 experts at d = 512 take seconds per iteration and about 4 GB. Thread counts of
// the rows: MOE_BENCH_THREADS (default 1,2). GFLOP/s counts the experts' GEMMs (2 flops per
// multiply-add; backward twice the forward).
#include "bench_common.hpp"

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

moe::Matrix<T> random_tokens(moe::Index d, std::uint64_t seed) {
    moe::Rng rng(seed);
    moe::Matrix<T> m(d, kTokens);
    for (moe::Index i = 0; i < m.size(); ++i) m.data()[i] = T(rng.normal());
    return m;
}

void run(benchmark::State& state, moe::Index d, moe::Index experts, moe::Index k, int threads, bool train) {
    if (!moe::bench::set_threads(state, threads)) return;
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
    // Each kept assignment runs d -> 2d -> d: 4 d^2 multiply-adds forward, twice that backward.
    const double slots = double(kTokens) * double(k);
    moe::bench::set_flops(state, 2.0 * 4.0 * double(d) * double(d) * slots * (train ? 3.0 : 1.0));
    const auto& st = layer.stats();
    state.counters["load_max_over_mean"] = st.load_balance;
}

void sparse_moe_train(benchmark::State& s) { run(s, s.range(0), s.range(1), s.range(2), int(s.range(3)), true); }
void sparse_moe_infer(benchmark::State& s) { run(s, s.range(0), s.range(1), s.range(2), int(s.range(3)), false); }
void dense_moe_train(benchmark::State& s) { run(s, s.range(0), s.range(1), s.range(1), int(s.range(2)), true); }

void register_all() {
    const auto threads = moe::bench::thread_counts();
    const std::vector<std::int64_t> dims{128, 512}, experts{8, 16, 64}, ks{1, 2};
    for (auto fn : {std::make_pair("sparse_moe_train", sparse_moe_train), std::make_pair("sparse_moe_infer", sparse_moe_infer)})
        benchmark::RegisterBenchmark(fn.first, fn.second)
            ->ArgNames({"d", "experts", "k", "threads"})
            ->ArgsProduct({dims, experts, ks, threads})
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("dense_moe_train", dense_moe_train)
        ->ArgNames({"d", "experts", "threads"})
        ->ArgsProduct({dims, experts, threads})
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) { return moe::bench::run_benchmarks(argc, argv, register_all); }
