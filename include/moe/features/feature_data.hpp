#pragma once
// FeatureData: a multi-task data set with ID features, in memory, and the gathering of samples
// from it into batches (what fit and evaluate of a FeatureModel feed it).
#include <cmath>
#include <string>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/features/feature_input.hpp"
#include "moe/train/dataset.hpp"

namespace moe {

/// N samples with ID features. `features` holds all of them (dense: spec.dense x N, N bags per ID
/// feature); labels: T x N, row t the labels of task t; mask: T x N (non-zero where the label
/// exists) or empty for "all present"; surfaces: each sample's surface for a tower-tree model
/// (MultiTaskSpec::surfaces > 1), or empty; teacher: a teacher's predictions (T x N, after the
/// heads) for offline distillation, or empty.
template <class T>
struct FeatureData {
    FeatureBatch<T> features;
    Matrix<T> labels, mask;
    std::vector<Index> surfaces;
    Matrix<T> teacher;

    Index size() const { return labels.cols(); }

    /// Checks everything against the input block and the tasks: the batch as FeatureInput::check
    /// does (ids, offsets, lengths, weights, feature names), finite dense features, labels and mask
    /// of T x N, labels valid for their tasks. Errors name the data set (`what`), the feature or
    /// task and the sample; the surfaces against a model of `model_surfaces`.
    void check(const FeatureInput<T>& input, const std::vector<TaskSpec>& tasks, const std::string& what,
               Index model_surfaces = 1) const {
        const std::string who = "moe::FeatureData(" + what + ")";
        Index n = 0;
        try {
            n = input.check(features);
        } catch (const shape_error& e) {
            throw shape_error(who + ": " + e.what());
        } catch (const config_error& e) {
            throw config_error(who + ": " + e.what());
        }
        detail::require(n > 0, who, ": no samples");
        for (Index j = 0; j < features.dense.cols(); ++j)
            for (Index i = 0; i < features.dense.rows(); ++i)
                detail::require(std::isfinite(static_cast<double>(features.dense(i, j))), who, ": dense feature ", i,
                                " of sample ", j, " is ", features.dense(i, j), ", expected a finite value");
        const auto n_tasks = Index(tasks.size());
        detail::check_shape(labels, n_tasks, n, who, "check", "labels");
        if (mask.size() != 0) detail::check_shape(mask, n_tasks, n, who, "check", "mask");
        detail::check_labels(labels, mask, tasks, who);
        detail::check_surface_column(surfaces, n, model_surfaces, who);
    }
};

/// Copies samples samples[0..n) of `from` into `to`, in that order: the dense columns, the bags
/// (ids and per-id weights) of every feature. `to`'s storage is reused: batches of a size seen
/// before, with bags no longer than seen before, allocate nothing. `from` must be checked (the
/// samples are indices of its samples).
template <class T>
void gather_samples(const FeatureBatch<T>& from, const Index* samples, Index n, FeatureBatch<T>& to) {
    // The samples `from` holds: its dense columns, or the bags of its first feature.
    const Index available = from.dense.rows() > 0 || from.sparse.empty() ? from.dense.cols() : from.sparse.begin()->second.size();
    for (Index j = 0; j < n; ++j)
        detail::require(samples[j] >= 0 && samples[j] < available, "moe::gather_samples: sample ", samples[j], " (entry ", j,
                        ") is outside the ", available, " samples of the batch");
    if (to.dense.rows() != from.dense.rows() || to.dense.cols() != n) to.dense.resize(from.dense.rows(), n);
    for (Index j = 0; j < n; ++j) to.dense.col(j) = from.dense.col(samples[j]);
    for (const auto& [name, bags] : from.sparse) {
        Bags<T>& out = to.sparse[name];
        out.ids.clear();
        out.weights.clear();
        out.offsets.assign(1, 0);
        for (Index j = 0; j < n; ++j) {
            const auto begin = std::ptrdiff_t(bags.offsets[std::size_t(samples[j])]);
            const auto end = std::ptrdiff_t(bags.offsets[std::size_t(samples[j]) + 1]);
            out.ids.insert(out.ids.end(), bags.ids.begin() + begin, bags.ids.begin() + end);
            if (!bags.weights.empty())
                out.weights.insert(out.weights.end(), bags.weights.begin() + begin, bags.weights.begin() + end);
            out.offsets.push_back(std::int64_t(out.ids.size()));
        }
    }
}

}  // namespace moe
