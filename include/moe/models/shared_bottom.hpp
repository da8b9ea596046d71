#pragma once
// Shared-bottom multi-task model (Caruana 1997): one MLP for all tasks, one tower per task.
#include <string>
#include <vector>

#include "moe/core/module.hpp"
#include "moe/layers/mlp.hpp"
#include "moe/models/multitask_spec.hpp"
#include "moe/models/towers.hpp"

namespace moe {

/// Configuration of a SharedBottom model. With the fields of MultiTaskSpec: input, tower_hidden,
/// tasks, activation, batchnorm (bottom and towers), tower_dropout.
struct SharedBottomSpec : MultiTaskSpec {
    std::vector<Index> bottom_hidden;      ///< hidden widths of the shared MLP
    Index bottom_dim = 0;                  ///< its output width
    double bottom_dropout = 0.0;           ///< dropout after the hidden layers of the bottom
    bool bottom_output_activation = true;  ///< the activation on the bottom's output too

    MLPSpec bottom_mlp() const {
        return make_mlp_spec(input, bottom_hidden, bottom_dim, activation, batchnorm, bottom_dropout, bottom_output_activation);
    }
};

/// Shared-bottom model. Shapes: x is input x B; forward() gives, per task, the tower output the loss
/// sees; predict() the predictions after the heads. Parameters "bottom.{i}.*", "towers.{t}.{i}.*".
template <class T>
class SharedBottom : public Composite<SharedBottom<T>> {
public:
    using Scalar = T;
    using Spec = SharedBottomSpec;

    explicit SharedBottom(const SharedBottomSpec& spec)
        : spec_(checked(spec)), bottom_(spec.bottom_mlp(), "moe::SharedBottom.bottom"), towers_(spec, spec.bottom_dim, 1, name_) {}

    const SharedBottomSpec& spec() const { return spec_; }
    const std::vector<TaskSpec>& tasks() const { return towers_.tasks(); }
    /// Surfaces of the tower tree (1: one tower per task).
    Index surfaces() const { return spec_.surfaces; }
    Index in_features() const { return spec_.input; }
    const std::string& name() const { return name_; }

    template <class F>
    void for_each_child(F&& f) {
        f("bottom", bottom_);
        f("towers", towers_);
    }

    const std::vector<ConstView<T>>& forward(const ConstView<T>& x, const SurfaceIds& surfaces = {}) {
        detail::check_rows(x, spec_.input, name_, "forward");
        return towers_.forward(bottom_.forward(x), surfaces);
    }
    const MatrixView<T>& backward(const std::vector<ConstView<T>>& doutputs, bool input_grad = false) {
        return bottom_.backward(towers_.backward(doutputs, bottom_.output().cols(), name_), input_grad);
    }
    const std::vector<ConstView<T>>& predict(const ConstView<T>& x, InferenceWorkspace<T>& ws,
                                             const SurfaceIds& surfaces = {}) const {
        detail::check_rows(x, spec_.input, name_, "predict");
        surfaces.check(x.cols(), spec_.surfaces, name_, "predict");
        double macs = 0, in = double(spec_.input);
        for (Index h : spec_.bottom_hidden) macs += in * double(h), in = double(h);
        macs += in * double(spec_.bottom_dim) * (1.0 + double(spec_.tasks.size()));  // a rough tower estimate
        return detail::predict_in_blocks(
            x, surfaces, tasks(), macs,
            ws, [&](const ConstView<T>& xb, const SurfaceIds& sb, InferenceScratch<T>& s) -> const auto& {
                return towers_.predict(bottom_.infer(xb, s.experts_a, s.experts_b), s, sb);
            });
    }

private:
    static const SharedBottomSpec& checked(const SharedBottomSpec& s) {
        detail::check_multitask_spec(s, "moe::SharedBottom");
        detail::require(s.bottom_dim > 0, "moe::SharedBottom: bottom_dim must be positive, got ", s.bottom_dim);
        return s;
    }
    SharedBottomSpec spec_;
    std::string name_ = "moe::SharedBottom";
    MLP<T> bottom_;
    TowerSet<T> towers_;
};

}  // namespace moe
