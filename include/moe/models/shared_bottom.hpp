#pragma once
// Shared-bottom multi-task model (Caruana 1997): one MLP for all tasks, one tower per task.
#include <string>
#include <vector>

#include "moe/layers/mlp.hpp"
#include "moe/models/towers.hpp"

namespace moe {

/// Configuration of a SharedBottom model.
struct SharedBottomSpec {
    Index input = 0;                   ///< features of x
    std::vector<Index> bottom_hidden;  ///< hidden widths of the shared MLP
    Index bottom_dim = 0;              ///< its output width
    std::vector<Index> tower_hidden;   ///< hidden widths of each tower
    std::vector<TaskSpec> tasks;
    ActivationKind activation = ActivationKind::relu;
    bool batchnorm = false;  ///< BatchNorm1d after the hidden activations of the bottom and the towers
    double bottom_dropout = 0.0, tower_dropout = 0.0;
    bool bottom_output_activation = true;  ///< the activation on the bottom's output too
};

/// Shared-bottom model. Shapes: x is input x B; forward() gives, per task, the tower output the loss
/// sees; predict() the predictions after the heads. Parameters "bottom.{i}.*", "towers.{t}.{i}.*".
template <class T>
class SharedBottom {
public:
    using Scalar = T;
    using Spec = SharedBottomSpec;

    explicit SharedBottom(const SharedBottomSpec& spec)
        : spec_(checked(spec)), bottom_(bottom_spec(spec), "moe::SharedBottom.bottom"),
          towers_(spec.tasks, spec.bottom_dim, 1,
                  TowerOptions{spec.tower_hidden, spec.activation, spec.batchnorm, spec.tower_dropout}, name_) {}

    const SharedBottomSpec& spec() const { return spec_; }
    const std::vector<TaskSpec>& tasks() const { return towers_.tasks(); }
    Index in_features() const { return spec_.input; }
    const std::string& name() const { return name_; }

    const std::vector<ConstView<T>>& forward(const ConstView<T>& x) {
        detail::check_rows(x, spec_.input, name_, "forward");
        return towers_.forward(bottom_.forward(x));
    }
    const MatrixView<T>& backward(const std::vector<ConstView<T>>& doutputs, bool input_grad = false) {
        return bottom_.backward(towers_.backward(doutputs, bottom_.output().cols(), name_), input_grad);
    }
    const std::vector<ConstView<T>>& predict(const ConstView<T>& x, InferenceWorkspace<T>& ws) const {
        detail::check_rows(x, spec_.input, name_, "predict");
        double macs = 0, in = double(spec_.input);
        for (Index h : spec_.bottom_hidden) macs += in * double(h), in = double(h);
        macs += in * double(spec_.bottom_dim) * (1.0 + double(spec_.tasks.size()));  // a rough tower estimate
        return detail::predict_in_blocks(x, tasks(), macs, ws,
                                         [&](const ConstView<T>& xb, InferenceScratch<T>& s) -> const auto& {
                                             return towers_.predict(bottom_.infer(xb, s.c, s.d), s);
                                         });
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        bottom_.for_each_parameter(join_name(prefix, "bottom"), f);
        towers_.for_each_parameter(join_name(prefix, "towers"), f);
    }
    template <class F>
    void for_each_batchnorm(const std::string& prefix, F&& f) {
        bottom_.for_each_batchnorm(join_name(prefix, "bottom"), f);
        towers_.for_each_batchnorm(join_name(prefix, "towers"), f);
    }
    template <class F>
    void for_each_dropout(F&& f) {
        bottom_.for_each_dropout(f);
        towers_.for_each_dropout(f);
    }
    void reset_parameters(Rng& rng) {
        bottom_.reset_parameters(rng);
        towers_.reset_parameters(rng);
    }
    void set_training(bool on) {
        bottom_.set_training(on);
        towers_.set_training(on);
    }
    void train() { set_training(true); }
    void eval() { set_training(false); }

private:
    static const SharedBottomSpec& checked(const SharedBottomSpec& s) {
        detail::require(s.input > 0, "moe::SharedBottom: input must be positive, got ", s.input);
        detail::require(s.bottom_dim > 0, "moe::SharedBottom: bottom_dim must be positive, got ", s.bottom_dim);
        detail::check_tasks(s.tasks, "moe::SharedBottom");
        return s;
    }
    static MLPSpec bottom_spec(const SharedBottomSpec& s) {
        MLPSpec b;
        b.sizes.push_back(s.input);
        b.sizes.insert(b.sizes.end(), s.bottom_hidden.begin(), s.bottom_hidden.end());
        b.sizes.push_back(s.bottom_dim);
        b.activation = s.activation;
        b.batchnorm = s.batchnorm;
        b.dropout = s.bottom_dropout;
        b.output_activation = s.bottom_output_activation;
        return b;
    }

    SharedBottomSpec spec_;
    std::string name_ = "moe::SharedBottom";
    MLP<T> bottom_;
    TowerSet<T> towers_;
};

}  // namespace moe
