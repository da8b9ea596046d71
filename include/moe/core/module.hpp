#pragma once
// The module contract: what every layer and model of moe provides, stated once, in code.
//
// There are two kinds of modules, and every class of the library is one of them:
//
// * A LAYER computes something of its own (Linear, BatchNorm1d, Softmax, SparseMoE, ...). It
//   implements the whole contract itself; ExampleScale below is a complete, commented one. A layer
//   without parameters derives from ParameterFree, which supplies the empty members.
//
// * A COMPOSITE is made of other modules (MLP, GateBank, Tower, MMoE, PLE, ...). It lists its
//   children once, in for_each_child, and derives from Composite<Self>, which forwards
//   for_each_parameter, reset_parameters, set_training (and the BatchNorm and Dropout visitors) to
//   every child in that order. A child cannot be forgotten by one visitor and seen by another.
//   ExampleResidual below is a complete, commented one.
//
// The contract (T is float or double; x, y are column-major features x batch):
//
//   required
//     using Scalar = T;
//     const MatrixView<T>& forward(const ConstView<T>& x);
//         Returns a layer-owned output. Keeps a VIEW of x for backward: x must stay alive and
//         unchanged until backward. Caches what backward needs.
//     const MatrixView<T>& backward(const ConstView<T>& dy);
//         dy has the shape of the last forward's output. ADDS the parameter gradients (so shared
//         parameters and gradient accumulation work, as in PyTorch) and returns dx, which it
//         ASSIGNS (a layer-owned buffer, valid until the next backward).
//     template <class F> void for_each_parameter(const std::string& prefix, F&& f);
//         Calls f(name, Param<T>&) for every parameter, in state_dict order, with PyTorch's
//         state_dict names under prefix (join_name). A stacked Param (parts > 1) puts "{}" in its
//         name where the part index goes. This is how ParameterStore lays out and binds the flat
//         store, and how model files name tensors.
//     void reset_parameters(Rng& rng);
//         PyTorch's default initialisation, drawing from rng in for_each_parameter order.
//     void set_training(bool on);
//         Training (batch statistics, dropout) or evaluation semantics.
//   optional
//     const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& out) const;
//         The inference path: evaluation semantics into a caller-owned buffer, nothing cached, safe
//         on a const module from several threads (one buffer set each).
//     const MatrixView<T>& output() const;          the last forward's output
//     backward(dy, bool input_grad)                 a first layer may skip computing dx
//     double aux_loss() const;                      the weighted auxiliary losses of the last forward
//         (load balancing, a gate's regulariser): backward() then returns the gradients of
//         sum(dy .* y) + aux_loss(), and fit adds aux_loss() to the loss it reports
//
// Multi-task models (MMoE, PLE, SharedBottom, SparseMMoE) are composites whose forward takes x and
// returns one ConstView per task (the tower outputs the losses see), whose backward takes one
// gradient per task, and which add: tasks(), in_features(), spec(), name(), and
// predict(x, InferenceWorkspace<T>&) const (models/inference.hpp).
//
// The generic gradient checker (moe/testing/gradcheck.hpp) checks any module with this contract.
#include <string>
#include <type_traits>

#include "moe/core/buffer.hpp"
#include "moe/core/errors.hpp"
#include "moe/core/parameters.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/view.hpp"
#include "moe/detail/row_sums.hpp"

namespace moe {

template <class T>
class BatchNorm1d;
template <class T>
class Dropout;

/// The members of the contract that a layer without parameters has nothing to do in.
class ParameterFree {
public:
    template <class F>
    void for_each_parameter(const std::string&, F&&) {}
    void reset_parameters(Rng&) {}
    void set_training(bool) {}
};

namespace detail {
template <class M, class = void>
struct is_composite : std::false_type {};
template <class M>
struct is_composite<M, std::void_t<decltype(std::declval<M&>().for_each_child(std::declval<void (*)(const std::string&, int&)>()))>>
    : std::true_type {};
template <class M, class = void>
struct has_aux_loss : std::false_type {};
template <class M>
struct has_aux_loss<M, std::void_t<decltype(double(std::declval<const M&>().aux_loss()))>> : std::true_type {};
template <class M>
struct is_batchnorm : std::false_type {};
template <class T>
struct is_batchnorm<BatchNorm1d<T>> : std::true_type {};
template <class M>
struct is_dropout : std::false_type {};
template <class T>
struct is_dropout<Dropout<T>> : std::true_type {};
}  // namespace detail

/// The visitors of a composite module, forwarded to the children that Derived lists in
/// `template <class F> void for_each_child(F&& f)`: f(name, child) for each child, in state_dict
/// order (name "" when the child adds no level to the names, "{}.0" style names for grouped members).
template <class Derived>
class Composite {
public:
    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        self().for_each_child([&](const std::string& name, auto& child) { child.for_each_parameter(join_name(prefix, name), f); });
    }
    void reset_parameters(Rng& rng) {
        self().for_each_child([&](const std::string&, auto& child) { child.reset_parameters(rng); });
    }
    void set_training(bool on) {
        self().for_each_child([&](const std::string&, auto& child) { child.set_training(on); });
    }
    void train() { set_training(true); }
    void eval() { set_training(false); }

    /// f(name, BatchNorm1d<T>&) for every BatchNorm in the tree; with stacked members the name
    /// holds "{}" for the member index (as for_each_parameter's names do).
    template <class F>
    void for_each_batchnorm(const std::string& prefix, F&& f) {
        self().for_each_child([&](const std::string& name, auto& child) {
            using C = std::decay_t<decltype(child)>;
            if constexpr (detail::is_batchnorm<C>::value) f(join_name(prefix, name), child);
            else if constexpr (detail::is_composite<C>::value) child.for_each_batchnorm(join_name(prefix, name), f);
        });
    }
    /// f(Dropout<T>&) for every Dropout in the tree.
    template <class F>
    void for_each_dropout(F&& f) {
        self().for_each_child([&](const std::string&, auto& child) {
            using C = std::decay_t<decltype(child)>;
            if constexpr (detail::is_dropout<C>::value) f(child);
            else if constexpr (detail::is_composite<C>::value) child.for_each_dropout(f);
        });
    }

private:
    Derived& self() { return static_cast<Derived&>(*this); }
};

/// f(name, bn) for every BatchNorm1d of any module (none for a layer that is not a composite).
template <class M, class F>
void for_each_batchnorm(M& module, const std::string& prefix, F&& f) {
    if constexpr (detail::is_composite<M>::value) module.for_each_batchnorm(prefix, f);
}
/// f(dropout) for every Dropout of any module.
template <class M, class F>
void for_each_dropout(M& module, F&& f) {
    if constexpr (detail::is_dropout<M>::value) f(module);
    else if constexpr (detail::is_composite<M>::value) module.for_each_dropout(f);
}

namespace example {

/// A complete layer, commented: y = w .* x + b per feature (w, b learned, F x 1 each).
/// Shapes: x, y, dy, dx are F x B. Parameters "weight" and "bias" (F), PyTorch-style names.
template <class T>
class ExampleScale {
public:
    using Scalar = T;  // required: the scalar type (float or double)

    explicit ExampleScale(Index features, std::string name = "moe::example::ExampleScale")
        : name_(std::move(name)), weight_(features, 1), bias_(features, 1) {
        // Settings are checked at construction, in every build type, with the value in the message.
        detail::require(features > 0, name_, ": features must be positive, got ", features);
    }

    const MatrixView<T>& forward(const ConstView<T>& x) {
        // Shapes are checked on every call: a wrong shape throws shape_error naming both shapes.
        detail::check_rows(x, weight_.rows, name_, "forward");
        x_ = x;  // a view, not a copy: the caller keeps x alive until backward
        auto& y = y_.resize(x.rows(), x.cols());  // grow-only: no allocation in steady state
        y = ((x.array().colwise() * weight_.value_vec().array()).colwise() + bias_.value_vec().array()).matrix();
        return y;
    }

    const MatrixView<T>& backward(const ConstView<T>& dy) {
        detail::check_shape(dy, x_.rows(), x_.cols(), name_, "backward", "output gradient");
        detail::add_row_dots(dy, x_, weight_.grad_vec());  // ADD to the gradients
        detail::add_row_sums(dy, bias_.grad_vec());
        auto& dx = dx_.resize(dy.rows(), dy.cols());      // ASSIGN dx
        dx = (dy.array().colwise() * weight_.value_vec().array()).matrix();
        return dx;
    }

    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        f(join_name(prefix, "weight"), weight_);
        f(join_name(prefix, "bias"), bias_);
    }
    void reset_parameters(Rng& rng) {  // draws in for_each_parameter order
        for (Index i = 0; i < weight_.rows; ++i) weight_.value(i, 0) = T(1 + 0.1 * rng.normal());
        bias_.value.setZero();
    }
    void set_training(bool) {}  // no training/evaluation difference

    const MatrixView<T>& output() const { return y_.view(); }

private:
    std::string name_;
    Param<T> weight_, bias_;  // views into the model's flat store, bound by ParameterStore
    ConstView<T> x_;
    Buffer<T> y_, dx_;
};

/// A complete composite, commented: y = x + scale(x), two children listed once.
/// Shapes: x, y are F x B. Parameters "scale.weight", "scale.bias".
template <class T>
class ExampleResidual : public Composite<ExampleResidual<T>> {
public:
    using Scalar = T;

    explicit ExampleResidual(Index features) : scale_(features) {}

    // The one place the children are listed: parameters, initialisation, training mode, BatchNorm
    // and Dropout visitors all come from here (Composite), in this order.
    template <class F>
    void for_each_child(F&& f) {
        f("scale", scale_);
    }

    const MatrixView<T>& forward(const ConstView<T>& x) {
        const MatrixView<T>& s = scale_.forward(x);
        auto& y = y_.resize(x.rows(), x.cols());
        y = x + s;
        return y;
    }
    const MatrixView<T>& backward(const ConstView<T>& dy) {
        auto& dx = dx_.resize(dy.rows(), dy.cols());
        dx = dy;                    // the identity path
        dx += scale_.backward(dy);  // children return their dx; the composite sums the paths
        return dx;
    }

private:
    ExampleScale<T> scale_;
    Buffer<T> y_, dx_;
};

}  // namespace example
}  // namespace moe
