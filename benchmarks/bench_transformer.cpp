// The MoE Transformer layer (models/moe_transformer_layer.hpp) and its attention, float32.
//
//   moe_transformer_train/batch:16/seq:128/threads:N   one pre-norm layer, d 256, 4 heads, causal,
//        a SparseMoE of 8 GELU experts of 512, top-2 (Switch balance loss 0.01): forward, backward
//        and an AdamW step; items_per_second = tokens/s. tools/compare_transformer_pytorch.py runs
//        the same layer in PyTorch in the same run.
//   attention_train/batch:B/seq:S/threads:N   MultiheadAttention alone (d 256, 4 heads, causal):
//        forward and backward. Its memory is O(S x 64) per (sequence, head) in flight, not O(S^2):
//        peak_MiB is the peak resident memory of the loop above what it started with (meaningful in
//        a process that runs only this row, as the compare script does).
//
// GFLOP/s counts the GEMMs (projections, scores, values; the experts' kept assignments) at 2 flops
// per multiply-add, backward twice the forward; causal attention counts the full S x S products.
#include "bench_common.hpp"

#include <algorithm>

namespace {

using T = float;
constexpr moe::Index kDim = 256, kHeads = 4, kExperts = 8, kFfn = 512, kTopK = 2;

moe::Matrix<T> random_matrix(moe::Index rows, moe::Index cols, std::uint64_t seed) {
    moe::Rng rng(seed);
    moe::Matrix<T> m(rows, cols);
    for (moe::Index i = 0; i < m.size(); ++i) m.data()[i] = T(rng.normal());
    return m;
}

moe::MoETransformerLayerSpec layer_spec() {
    moe::MoETransformerLayerSpec s;
    s.dim = kDim;
    s.heads = kHeads;
    s.ffn = kFfn;
    s.experts = kExperts;
    s.moe.k = kTopK;
    s.moe.balance_coef = 0.01;
    return s;
}

/// Multiply-adds of attention's forward over B sequences of S tokens: projections 4 S d^2, scores
/// and values 2 S^2 d.
double attention_macs(double b, double s) { return b * (4.0 * s * kDim * kDim + 2.0 * s * s * kDim); }

void moe_transformer_train(benchmark::State& state) {
    const moe::Index batch = state.range(0), seq = state.range(1);
    if (!moe::bench::set_threads(state, state.range(2))) return;
    moe::Model<moe::MoETransformerLayer<T>> layer(layer_spec(), 1);
    layer.train();
    moe::AdamOptions o;
    o.weight_decay = 0.01;
    moe::AdamW<T> adamw(o);
    const moe::Matrix<T> x = random_matrix(kDim, batch * seq, 2), dy = random_matrix(kDim, batch * seq, 3);
    for (auto _ : state) {
        layer.zero_grad();
        benchmark::DoNotOptimize(layer.forward(x, seq).data());
        benchmark::DoNotOptimize(layer.backward(dy).data());
        adamw.step(layer.params());
    }
    const double tokens = double(batch * seq);
    state.SetItemsProcessed(state.iterations() * batch * seq);
    const double macs = attention_macs(double(batch), double(seq)) + tokens * kTopK * 2.0 * kDim * kFfn + tokens * kDim * kExperts;
    moe::bench::set_flops(state, 2.0 * macs * 3.0);
}

void attention_train(benchmark::State& state) {
    const moe::Index batch = state.range(0), seq = state.range(1);
    if (!moe::bench::set_threads(state, state.range(2))) return;
    moe::MultiheadAttention<T> attn(kDim, kHeads, 0.0, /*causal=*/true);
    moe::ParameterStore<T> store;
    store.bind(attn);
    moe::Rng rng(1);
    attn.reset_parameters(rng);
    const moe::Matrix<T> x = random_matrix(kDim, batch * seq, 2), dy = random_matrix(kDim, batch * seq, 3);
    moe::bench::PeakMemory memory;
    memory.start();
    for (auto _ : state) {
        store.grads().setZero();
        benchmark::DoNotOptimize(attn.forward(x, seq).data());
        benchmark::DoNotOptimize(attn.backward(dy).data());
    }
    state.SetItemsProcessed(state.iterations() * batch * seq);
    moe::bench::set_flops(state, 2.0 * attention_macs(double(batch), double(seq)) * 3.0);
    // Above the inputs and parameters (Linux only). The largest over the runs of this row: only a
    // process's first run meets fresh memory (later ones reuse what malloc kept).
    static double peak = 0;
    peak = std::max(peak, memory.peak_mib());
    state.counters["peak_MiB"] = peak;
}

void register_all() {
    const auto threads = moe::bench::thread_counts();
    benchmark::RegisterBenchmark("moe_transformer_train", moe_transformer_train)
        ->ArgNames({"batch", "seq", "threads"})
        ->ArgsProduct({{16}, {128}, threads})
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("attention_train", attention_train)
        ->ArgNames({"batch", "seq", "threads"})
        ->ArgsProduct({{1}, {1024}, threads})
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) { return moe::bench::run_benchmarks(argc, argv, register_all); }
