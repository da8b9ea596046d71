// ID embeddings: one training step of the embedding tables of a recommender's sparse features, as
// the issue "Categorical and ID features" sets it: 26 features of dim 16, bags of 1 id (one-hot) or
// 20 ids (multi-hot), batch 2048, per feature EmbeddingBag forward (sum), backward (row-sparse) and a
// SparseAdam step. embedding_bag_scaling: one feature, 20-hot, at 1e4, 1e6 and 1e7 rows: the step
// must not grow with the table. With uniform ids a table of 1e4 rows has fewer distinct rows per step
// (about 9.8k of 40960 ids) than one of 1e7 (about 40.9k), so the optimizer does a quarter of the
// work; embedding_bag_scaling_same_rows draws each batch from 4096 random rows of the table, so
// that only the table's size changes. feature_input_step: the 26 features through FeatureInput and a
// TableOptimizer on 1 and 2 threads (features and tables over the threads). tools/compare_embedding_pytorch.py runs PyTorch's
// EmbeddingBag(sparse=True) + SparseAdam on the same shapes. The layer runs on one thread today.
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bench_common.hpp"

namespace {

constexpr moe::Index kDim = 16, kBatch = 2048;
constexpr int kBatchesCycled = 4;  // distinct batches of ids, so that the touched rows change per step
constexpr moe::Index kPool = 4096;  // embedding_bag_scaling_same_rows: distinct rows per batch (at most)

/// The tables, their optimizers and a few batches of random ids per feature.
struct Features {
    std::vector<moe::EmbeddingBag<float>> tables;
    std::vector<moe::SparseAdam<float>> adams;
    std::vector<std::vector<moe::Bags<float>>> batches;  // [feature][batch]
    moe::Matrix<float> dy = moe::Matrix<float>::Constant(kDim, kBatch, 1e-3f);

    /// pool > 0: each batch's ids come from `pool` rows drawn at random from the table, so that the
    /// rows a step touches are as many whatever the table's size (only where they lie changes).
    Features(moe::Index features, moe::Index rows, moe::Index hot, moe::Index pool = 0) {
        std::mt19937_64 gen(7);
        std::uniform_int_distribution<std::int64_t> id(0, rows - 1);
        tables.reserve(std::size_t(features));
        adams.reserve(std::size_t(features));
        for (moe::Index f = 0; f < features; ++f) {
            tables.emplace_back(rows, kDim, moe::PoolingMode::sum);
            tables.back().table().setConstant(0.01f);  // values do not matter for the time; N(0, 1) of 1e8 values would
            adams.emplace_back(tables.back());
            batches.emplace_back();
            for (int b = 0; b < kBatchesCycled; ++b) {
                std::vector<std::int64_t> ids(std::size_t(kBatch * hot));
                std::vector<std::int64_t> rows_of_pool(static_cast<std::size_t>(pool));
                for (auto& r : rows_of_pool) r = id(gen);
                std::uniform_int_distribution<std::size_t> pick(0, rows_of_pool.empty() ? 0 : rows_of_pool.size() - 1);
                for (auto& v : ids) v = pool > 0 ? rows_of_pool[pick(gen)] : id(gen);
                batches.back().push_back(moe::Bags<float>::from_lengths(std::move(ids), std::vector<std::int64_t>(kBatch, hot)));
            }
        }
    }
    void step(int batch) {
        for (std::size_t f = 0; f < tables.size(); ++f) {
            benchmark::DoNotOptimize(tables[f].forward(batches[f][std::size_t(batch)]).data());
            adams[f].step(tables[f], tables[f].backward(dy));
        }
    }
};

void run(benchmark::State& state, moe::Index features, moe::Index rows, moe::Index hot, moe::Index pool = 0) {
    Features f(features, rows, hot, pool);
    for (int b = 0; b < kBatchesCycled; ++b) f.step(b);  // every buffer at its size
    int batch = 0;
    for (auto _ : state) {
        f.step(batch);
        batch = (batch + 1) % kBatchesCycled;
    }
    state.SetItemsProcessed(state.iterations() * kBatch);
}

void embedding_bag_step(benchmark::State& s) { run(s, 26, s.range(0), s.range(1)); }

/// The same 26 features through a FeatureInput (the input block of FeatureModel) and a
/// TableOptimizer: forward, backward and the SparseAdam steps, features and tables over the threads.
void feature_input_step(benchmark::State& state) {
    if (!moe::bench::set_threads(state, state.range(2))) return;
    const moe::Index rows = state.range(0), hot = state.range(1);
    moe::FeatureSpec spec;
    for (int f = 0; f < 26; ++f) {
        spec.add_table("t" + std::to_string(f), rows, kDim);
        spec.add_feature("f" + std::to_string(f), "t" + std::to_string(f));
    }
    moe::FeatureInput<float> input(spec);
    moe::TableOptimizer<float> tables(input);
    std::mt19937_64 gen(7);
    std::uniform_int_distribution<std::int64_t> id(0, rows - 1);
    std::vector<moe::FeatureBatch<float>> batches(kBatchesCycled);
    for (auto& b : batches)
        for (int f = 0; f < 26; ++f) {
            std::vector<std::int64_t> ids(std::size_t(kBatch * hot));
            for (auto& v : ids) v = id(gen);
            b.sparse["f" + std::to_string(f)] = moe::Bags<float>::from_lengths(std::move(ids), std::vector<std::int64_t>(kBatch, hot));
        }
    const moe::Matrix<float> dy = moe::Matrix<float>::Constant(input.width(), kBatch, 1e-3f);
    auto step = [&](int b) {
        benchmark::DoNotOptimize(input.forward(batches[std::size_t(b)]).data());
        input.backward(dy);
        tables.step(input);
    };
    for (int b = 0; b < kBatchesCycled; ++b) step(b);
    int batch = 0;
    for (auto _ : state) {
        step(batch);
        batch = (batch + 1) % kBatchesCycled;
    }
    state.SetItemsProcessed(state.iterations() * kBatch);
}
void embedding_bag_scaling(benchmark::State& s) { run(s, 1, s.range(0), 20); }
void embedding_bag_scaling_same_rows(benchmark::State& s) { run(s, 1, s.range(0), 20, kPool); }

void register_all() {
    benchmark::RegisterBenchmark("embedding_bag_step", embedding_bag_step)
        ->ArgNames({"rows", "hot"})
        ->ArgsProduct({{100000, 1000000}, {1, 20}})
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("feature_input_step", feature_input_step)
        ->ArgNames({"rows", "hot", "threads"})
        ->ArgsProduct({{100000}, {1, 20}, {1, 2}})
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    for (const auto& [name, fn] : {std::pair{"embedding_bag_scaling", embedding_bag_scaling},
                                   std::pair{"embedding_bag_scaling_same_rows", embedding_bag_scaling_same_rows}})
        benchmark::RegisterBenchmark(name, fn)
            ->ArgNames({"rows"})
            ->Args({10000})
            ->Args({1000000})
            ->Args({10000000})
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) { return moe::bench::run_benchmarks(argc, argv, register_all); }
