#pragma once
// FeatureModel: a multi-task model (MMoE, OMoE, SharedBottom, PLE, CGC, SparseMMoE) behind a
// FeatureInput, so that it learns from ID features as well as dense ones.
//
//   FeatureModel<MMoE<float>> model(features, mmoe_spec, /*seed=*/1);  // mmoe_spec.input = 0: taken from features
//   Adam<float> adam(model.params());                                   // the dense parameters
//   TableOptimizer<float> tables(model.input());                         // SparseAdam on every table
//   auto& out = model.forward(batch); loss.forward(out, labels); model.zero_grad();
//   model.backward(loss.backward()); adam.step(); tables.step(model.input());
#include <cstdint>
#include <vector>

#include "moe/core/model.hpp"
#include "moe/core/module.hpp"
#include "moe/features/feature_input.hpp"
#include "moe/models/inference.hpp"
#include "moe/tasks/surface_calibration.hpp"

namespace moe {

/// What predict() of a FeatureModel reuses between calls: the input block's output, the model's
/// workspace and the calibrated predictions. One per calling thread. After predict, raw() holds the
/// net's predictions before calibration (per task, outputs x B).
template <class T>
struct FeatureWorkspace {
    Buffer<T> input;
    std::vector<detail::AttentionScratch<T>> attention;  // the input's attention features
    InferenceWorkspace<T> model;
    std::vector<Buffer<T>> calibrated;
    std::vector<ConstView<T>> calibrated_out;

    const std::vector<ConstView<T>>& raw() const { return model.out; }
};

/// A FeatureInput in front of a Model<Net>. Shapes: a FeatureBatch of B samples in; per task the
/// tower output (outputs x B) out, as Net's. The net's spec takes the input's width as its `input`
/// (0 in the spec means exactly that; any other value must equal it). The dense parameters are
/// params() (train them with Adam/AdamW/SGD) and, with attention features, input().attention_params()
/// (a second store: step it too); the tables are input().table(i), with row-sparse gradients
/// input().grad(i) (train them with a TableOptimizer). fit() trains all three.
template <class Net>
class FeatureModel {
public:
    using Scalar = typename Net::Scalar;
    using T = Scalar;

    /// The net is initialised from `seed` as Model<Net>(spec, seed) would be; the tables from a
    /// second stream of the same seed.
    FeatureModel(const FeatureSpec& features, typename Net::Spec spec, std::uint64_t seed = 0)
        : input_(features), net_(with_input(std::move(spec), input_.width()), seed) {
        reset_tables(seed);
    }

    FeatureInput<T>& input() { return input_; }
    const FeatureInput<T>& input() const { return input_; }
    Model<Net>& net() { return net_; }
    const Model<Net>& net() const { return net_; }
    ParameterStore<T>& params() { return net_.params(); }
    const auto& tasks() const { return net_.tasks(); }
    /// Surfaces of the net's tower tree (1: one tower per task).
    Index surfaces() const { return net_.surfaces(); }
    /// Zeroes the dense gradients: the net's and the input's attention features'.
    void zero_grad() {
        net_.zero_grad();
        input_.attention_params().zero_grad();
    }
    void train() { net_.train(); }
    void eval() { net_.eval(); }
    /// The net's auxiliary loss (e.g. a DSelect-k gate's regulariser), 0 when it has none.
    double aux_loss() const {
        if constexpr (detail::has_aux_loss<Net>::value) return net_.aux_loss();
        return 0.0;
    }

    /// Re-initialises the net and the tables from a seed, as the constructor does.
    void reset_parameters(std::uint64_t seed) {
        net_.reset_parameters(seed);
        reset_tables(seed);
    }

    /// Training forward. The batch (and per-sample surfaces) must stay alive and unchanged until
    /// backward. A tower-tree net needs each sample's surface.
    const std::vector<ConstView<T>>& forward(const FeatureBatch<T>& batch, const SurfaceIds& surfaces = {}) {
        return net_.forward(input_.forward(batch), surfaces);
    }

    /// Adds the dense parameters' gradients and replaces the tables' row-sparse gradients.
    void backward(const std::vector<ConstView<T>>& doutputs) { input_.backward(net_.backward(doutputs, true)); }

    /// Predictions after the heads, per task, evaluation semantics; safe from several threads, one
    /// workspace each. With a calibration set (set_calibration) and `calibrated`, binary tasks'
    /// predictions are calibrated by each sample's surface; ws.raw() holds them uncalibrated either way.
    const std::vector<ConstView<T>>& predict(const FeatureBatch<T>& batch, FeatureWorkspace<T>& ws,
                                             const SurfaceIds& surfaces = {}, bool calibrated = true) const {
        const auto& raw = net_.predict(input_.infer(batch, ws.input, &ws.attention), ws.model, surfaces);
        if (!calibrated || calibration_.empty()) return raw;
        calibration_.apply(raw, surfaces, ws.calibrated, ws.calibrated_out);
        return ws.calibrated_out;
    }

    /// The calibration predict applies (per surface and task; empty: none). Fit it with
    /// Calibration::fit on held-out predictions (see fit_calibration); saved in the model file.
    const Calibration& calibration() const { return calibration_; }
    /// Sets the calibration; it must be for this model's surfaces and tasks (config_error). An empty
    /// Calibration removes it.
    void set_calibration(Calibration c) {
        if (!c.empty()) c.check_fits(surfaces(), tasks(), "moe::FeatureModel::set_calibration");
        calibration_ = std::move(c);
    }

private:
    static typename Net::Spec with_input(typename Net::Spec spec, Index width) {
        detail::require(spec.input == 0 || spec.input == width, "moe::FeatureModel: the model's spec has input ", spec.input,
                        " but the features give ", width, " per sample (set input to 0 to take it from the features)");
        spec.input = width;
        return spec;
    }
    void reset_tables(std::uint64_t seed) {
        Rng rng(seed ^ 0x7AB1E5ULL);
        input_.reset_parameters(rng);
    }

    FeatureInput<T> input_;
    Model<Net> net_;
    Calibration calibration_;
};

}  // namespace moe
