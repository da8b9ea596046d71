#pragma once
// The inference path of the multi-task models: the per-caller workspace, and predict_in_blocks,
// which runs a model block by block over the samples, the blocks spread over threads.
#include <algorithm>
#include <vector>

#include "moe/core/buffer.hpp"
#include "moe/core/threads.hpp"
#include "moe/core/view.hpp"
#include "moe/detail/gemm.hpp"
#include "moe/models/surfaces.hpp"
#include "moe/models/task.hpp"
#include "moe/routing/dispatch.hpp"

namespace moe {

/// Scratch of one block of samples on one thread, named by role.
template <class T>
struct InferenceScratch {
    Buffer<T> experts_a, experts_b;         ///< the expert bank's (or the bottom's) layers alternate between these
    Buffer<T> gates_a, gates_b, gates_out;  ///< the gates' layers, while the experts' output is still needed
    Buffer<T> mix, next_mix;                ///< the gated mixture; PLE's levels alternate between the two
    Buffer<T> towers_a, towers_b;           ///< each tower's layers
    Buffer<T> gathered, route_weight;       ///< top-k routing: the experts' gathered inputs, the gate weights
    Buffer<Index> route_choice;             ///< top-k routing: the chosen experts
    DispatchPlan plan;                      ///< top-k routing: where each sample's experts run
    detail::SurfaceGroups groups;           ///< surface towers: the block's samples by surface
    Buffer<T> surface_in, surface_out;      ///< surface towers: the mixture in surface order, a tower's predictions
    std::vector<Buffer<T>> preds;           ///< each task's predictions of the block
    std::vector<ConstView<T>> out;
    std::vector<std::vector<T>> values;     ///< graph models (moe::graph): one buffer per value of the graph
};

/// Scratch of one caller of a model's predict(): reuse it across calls (nothing is allocated once
/// it has grown to the batch size and thread count), one per caller when several threads share a
/// const model.
template <class T>
struct InferenceWorkspace {
    std::vector<InferenceScratch<T>> scratch;  // one per thread
    std::vector<Buffer<T>> preds;
    std::vector<ConstView<T>> out;
};

namespace detail {
/// Samples per block of the inference path: the activations of a block of the default MMoE
/// (2048 x 128 floats, 1 MB) stay in a core's L2 cache.
constexpr Index kInferenceBlock = 128;

/// Runs block(x_block, surfaces_of_block, scratch) -> per-task predictions over blocks of the columns of x, the blocks
/// spread over threads when the work pays for it (each block on one thread, its GEMMs serial), and
/// gathers the predictions into ws. Inference is per sample, so blocking changes no result.
template <class T, class F>
const std::vector<ConstView<T>>& predict_in_blocks(const ConstView<T>& x, const SurfaceIds& surfaces,
                                                   const std::vector<TaskSpec>& tasks, double macs_per_sample,
                                                   InferenceWorkspace<T>& ws, F&& block) {
    const Index n = x.cols();
    // Parts run on separate threads (as many as the arithmetic pays for: detail::threads_for), each
    // with its own scratch; a part is equal blocks of at most kInferenceBlock samples, run in order,
    // or one block when that is at most a quarter larger: 300 samples on 2 threads are 2 parts of
    // one block of 150 (2 blocks of 75 took 2% longer: each block repacks the weights).
    const Index parts = detail::threads_for(2.0 * macs_per_sample * double(n), n / 2);
    const Index per_part = (n + parts - 1) / parts;
    const Index blocks_per_part =
        per_part <= kInferenceBlock * 5 / 4 ? 1 : (per_part + kInferenceBlock - 1) / kInferenceBlock;
    const Index block_size = std::max<Index>(1, (per_part + blocks_per_part - 1) / blocks_per_part);
    const Index blocks = (n + block_size - 1) / block_size;
    if (ws.scratch.size() < static_cast<std::size_t>(parts)) ws.scratch.resize(static_cast<std::size_t>(parts));
    if (ws.preds.size() != tasks.size()) ws.preds.resize(tasks.size());
    if (ws.out.size() != tasks.size()) ws.out.resize(tasks.size());
    for (std::size_t t = 0; t < tasks.size(); ++t) ws.out[t] = ws.preds[t].resize(tasks[t].outputs(), n);
    auto run = [&](Index b, InferenceScratch<T>& s) {
        const Index begin = b * block_size, len = std::min(block_size, n - begin);
        const auto& p = block(ConstView<T>(x.data() + begin * x.outerStride(), x.rows(), len, x.outerStride()),
                              surfaces.block(begin, len), s);
        for (std::size_t t = 0; t < tasks.size(); ++t) ws.preds[t].view().middleCols(begin, len) = p[t];
    };
    const Index per_thread = (blocks + parts - 1) / parts;
#ifdef MOE_BLAS
    // The blocks' products run inside this region, where the BLAS cannot be warmed for the threads:
    // warm it before (a predict-only process grew BLIS's pools at a random later call).
    if (parts > 1) detail::warm_blas_for_threads();
#endif
    parallel_for_each(parts, parts > 1 ? 1e300 : 0.0, [&](Index part) {
        for (Index b = part * per_thread; b < std::min(blocks, (part + 1) * per_thread); ++b)
            run(b, ws.scratch[static_cast<std::size_t>(part)]);
    });
    return ws.out;
}
}  // namespace detail

}  // namespace moe
