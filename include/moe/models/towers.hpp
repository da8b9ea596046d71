#pragma once
// The towers of a multi-task model, and the per-caller workspace of its inference path.
#include <algorithm>
#include <string>
#include <vector>

#include "moe/core/threads.hpp"
#include "moe/models/tower.hpp"

namespace moe {

/// Scratch of one block of samples on one thread.
template <class T>
struct InferenceScratch {
    Buffer<T> a, b, c, d, mix;
    Buffer<T> gather, used, weight;  // top-k routing (SparseMMoE)
    Buffer<Index> choice;
    std::vector<Buffer<T>> preds;
    std::vector<ConstView<T>> out;
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

/// Runs block(x_block, scratch) -> per-task predictions over blocks of the columns of x, the blocks
/// spread over threads when the work pays for it (each block on one thread, its GEMMs serial), and
/// gathers the predictions into ws. Inference is per sample, so blocking changes no result.
template <class T, class F>
const std::vector<ConstView<T>>& predict_in_blocks(const ConstView<T>& x, const std::vector<TaskSpec>& tasks,
                                                   double macs_per_sample, InferenceWorkspace<T>& ws, F&& block) {
    const Index n = x.cols();
    const int threads = max_threads();
    const bool parallel = threads > 1 && n >= 2 * threads && macs_per_sample * double(n) >= kParallelWork;
    const Index parts = parallel ? threads : 1;
    const Index per_part = (n + parts - 1) / parts;
    // Equal blocks, the same number per thread: 300 samples on 2 threads are 4 blocks of 75.
    const Index blocks_per_part = std::max<Index>(1, (per_part + kInferenceBlock - 1) / kInferenceBlock);
    const Index block_size = std::max<Index>(1, (per_part + blocks_per_part - 1) / blocks_per_part);
    const Index blocks = (n + block_size - 1) / block_size;
    if (ws.scratch.size() < static_cast<std::size_t>(parts)) ws.scratch.resize(static_cast<std::size_t>(parts));
    if (ws.preds.size() != tasks.size()) ws.preds.resize(tasks.size());
    if (ws.out.size() != tasks.size()) ws.out.resize(tasks.size());
    for (std::size_t t = 0; t < tasks.size(); ++t) ws.out[t] = ws.preds[t].resize(tasks[t].outputs(), n);
    auto run = [&](Index b, InferenceScratch<T>& s) {
        const Index begin = b * block_size, len = std::min(block_size, n - begin);
        const auto& p = block(ConstView<T>(x.data() + begin * x.outerStride(), x.rows(), len, x.outerStride()), s);
        for (std::size_t t = 0; t < tasks.size(); ++t) ws.preds[t].view().middleCols(begin, len) = p[t];
    };
#ifdef _OPENMP
    if (parallel) {
#pragma omp parallel for num_threads(static_cast<int>(parts)) schedule(static)
        for (Index b = 0; b < blocks; ++b) run(b, ws.scratch[static_cast<std::size_t>(omp_get_thread_num())]);
        return ws.out;
    }
#endif
    for (Index b = 0; b < blocks; ++b) run(b, ws.scratch.front());
    return ws.out;
}
}  // namespace detail

/// How the towers of a model are built: hidden widths and the options of their hidden layers.
struct TowerOptions {
    std::vector<Index> hidden;
    ActivationKind activation = ActivationKind::relu;
    bool batchnorm = false;
    double dropout = 0.0;
};

/// One tower per task on a stacked representation M of (G D) x B: tower t reads block g(t) = t when
/// G equals the number of tasks (a mixture per task), else block 0 (one representation for all).
/// Parameters "{t}.0.weight", ... per tower (t the task index).
template <class T>
class TowerSet {
public:
    TowerSet(const std::vector<TaskSpec>& tasks, Index in, Index blocks, const TowerOptions& options,
             const std::string& name)
        : in_(in), blocks_(blocks) {
        detail::check_tasks(tasks, name);
        towers_.reserve(tasks.size());
        for (std::size_t t = 0; t < tasks.size(); ++t) {
            MLPSpec spec;
            spec.sizes.push_back(in);
            spec.sizes.insert(spec.sizes.end(), options.hidden.begin(), options.hidden.end());
            spec.sizes.push_back(tasks[t].outputs());
            spec.activation = options.activation;
            spec.batchnorm = options.batchnorm;
            spec.dropout = options.dropout;
            towers_.emplace_back(spec, tasks[t], name + ".towers." + std::to_string(t));
            tasks_.push_back(tasks[t]);
        }
        logits_.resize(tasks.size());
    }

    std::size_t size() const { return towers_.size(); }
    const std::vector<TaskSpec>& tasks() const { return tasks_; }
    Tower<T>& tower(std::size_t t) { return towers_.at(t); }

    /// Tower outputs (what the losses see) of every task, from M ((G D) x B, contiguous).
    const std::vector<ConstView<T>>& forward(const ConstView<T>& m) {
        for (std::size_t t = 0; t < towers_.size(); ++t) logits_[t] = towers_[t].forward(block(m, t));
        return logits_;
    }

    /// dM ((G D) x B) from the gradients of every tower's output.
    const MatrixView<T>& backward(const std::vector<ConstView<T>>& dlogits, Index batch, const std::string& who) {
        detail::require(dlogits.size() == towers_.size(), who, "::backward: expected ", towers_.size(),
                        " output gradients (one per task), got ", dlogits.size());
        auto& dm = dm_.resize(blocks_ * in_, batch);
        if (blocks_ < static_cast<Index>(towers_.size())) dm.setZero();
        for (std::size_t t = 0; t < towers_.size(); ++t) {
            if (dlogits[t].rows() != towers_[t].outputs() || dlogits[t].cols() != batch) {
                const std::string what = "output gradient of task '" + tasks_[t].name + "'";
                detail::check_shape(dlogits[t], towers_[t].outputs(), batch, who, "backward", what.c_str());
            }
            const MatrixView<T>& dx = towers_[t].backward(dlogits[t], true);
            auto blk = dm.middleRows(block_row(t), in_);
            if (blocks_ < static_cast<Index>(towers_.size())) blk += dx;
            else blk = dx;
        }
        return dm;
    }

    /// Predictions (after the heads) of every task into the scratch; a and b are used for the towers.
    const std::vector<ConstView<T>>& predict(const ConstView<T>& m, InferenceScratch<T>& ws) const {
        if (ws.preds.size() != towers_.size()) ws.preds.resize(towers_.size());
        if (ws.out.size() != towers_.size()) ws.out.resize(towers_.size());
        for (std::size_t t = 0; t < towers_.size(); ++t) ws.out[t] = towers_[t].predict(block(m, t), ws.a, ws.b, ws.preds[t]);
        return ws.out;
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        for (std::size_t t = 0; t < towers_.size(); ++t) towers_[t].for_each_parameter(join_name(prefix, std::to_string(t)), f);
    }
    template <class F>
    void for_each_batchnorm(const std::string& prefix, F&& f) {
        for (std::size_t t = 0; t < towers_.size(); ++t) towers_[t].for_each_batchnorm(join_name(prefix, std::to_string(t)), f);
    }
    template <class F>
    void for_each_dropout(F&& f) {
        for (auto& tw : towers_) tw.for_each_dropout(f);
    }
    void reset_parameters(Rng& rng) {
        for (auto& tw : towers_) tw.reset_parameters(rng);
    }
    void set_training(bool on) {
        for (auto& tw : towers_) tw.set_training(on);
    }

private:
    Index block_row(std::size_t t) const { return blocks_ == static_cast<Index>(towers_.size()) ? static_cast<Index>(t) * in_ : 0; }
    ConstView<T> block(const ConstView<T>& m, std::size_t t) const {
        return ConstView<T>(m.data() + block_row(t), in_, m.cols(), m.outerStride());
    }

    Index in_, blocks_;
    std::vector<Tower<T>> towers_;
    std::vector<TaskSpec> tasks_;
    std::vector<ConstView<T>> logits_;
    Buffer<T> dm_;
};

}  // namespace moe
