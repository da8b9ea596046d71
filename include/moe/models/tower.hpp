#pragma once
// A task tower: an MLP from the shared representation to the task's outputs, and the task's head.
#include <optional>
#include <string>

#include "moe/core/module.hpp"
#include "moe/layers/activations.hpp"
#include "moe/layers/mlp.hpp"
#include "moe/layers/softmax.hpp"
#include "moe/models/task.hpp"

namespace moe {

/// Task tower. spec.sizes = {in, hidden..., task.outputs()}; the usual tower is Linear-ReLU-
/// BatchNorm-Dropout-Linear (make_mlp_spec(in, {h}, 1, relu, true, p, false)).
/// Shapes: x is in x B; forward gives the values the loss sees (task.outputs() x B): logits for
/// binary and multiclass, the output (after ReLU when relu_output) for regression.
/// predict() applies the head: sigmoid, identity or ReLU, or softmax over the classes.
template <class T>
class Tower : public Composite<Tower<T>> {
public:
    using Scalar = T;

    Tower(const MLPSpec& spec, TaskSpec task, std::string name = "moe::Tower")
        : task_(std::move(task)), mlp_(spec, name) {
        detail::check_tasks({task_}, name);
        detail::require(spec.sizes.back() == task_.outputs(), name, ": the last size must be the task's outputs (",
                        task_.outputs(), " for ", to_string(task_.kind), " task '", task_.name, "'), got ",
                        spec.sizes.back());
        if (task_.relu_output) relu_.emplace(ActivationKind::relu, name + ".relu");
    }

    const TaskSpec& task() const { return task_; }
    Index in_features() const { return mlp_.in_features(); }
    Index outputs() const { return task_.outputs(); }

    template <class F>
    void for_each_child(F&& f) {
        f("", mlp_);
        if (relu_) f("", *relu_);
    }

    const MatrixView<T>& forward(const ConstView<T>& x) {
        const MatrixView<T>& y = mlp_.forward(x);
        return relu_ ? relu_->forward(y) : y;
    }
    const MatrixView<T>& backward(const ConstView<T>& dy, bool input_grad = true) {
        if (!relu_) return mlp_.backward(dy, input_grad);
        return mlp_.backward(relu_->backward(dy), input_grad);
    }

    /// Predictions (after the head) into `out`; a and b are scratch. Caches nothing.
    const MatrixView<T>& predict(const ConstView<T>& x, Buffer<T>& a, Buffer<T>& b, Buffer<T>& out) const {
        apply_head(task_, mlp_.infer(x, a, b), out);
        return out.view();
    }

    /// The head on tower outputs: sigmoid (binary), max(0, .) or identity (regression), softmax (multiclass).
    static void apply_head(const TaskSpec& task, const ConstView<T>& y, Buffer<T>& out) {
        auto& p = out.resize(y.rows(), y.cols());
        switch (task.kind) {
            case TaskKind::binary: p = y.unaryExpr([](T v) { return detail::stable_sigmoid(v); }); break;
            case TaskKind::regression:
                if (task.relu_output) p = y.cwiseMax(T(0));
                else p = y;
                break;
            case TaskKind::multiclass: detail::softmax_columns<T>(y, p); break;
        }
    }

    const MatrixView<T>& output() const { return relu_ ? relu_->output() : mlp_.output(); }

private:
    TaskSpec task_;
    MLP<T> mlp_;
    std::optional<Activation<T>> relu_;
};

}  // namespace moe
