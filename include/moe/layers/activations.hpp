#pragma once
// Elementwise activations. Each is a small "op" (value and derivative) used two ways: as a layer
// class of its own (ReLU<T>, GELU<T>, ...) and by the run-time Activation<T> that MLP uses, which
// switches once per call on the kind, never per element.
#include <cmath>
#include <string>

#include <unsupported/Eigen/SpecialFunctions>  // Array::erf

#include "moe/core/buffer.hpp"
#include "moe/core/errors.hpp"
#include "moe/core/module.hpp"
#include "moe/core/threads.hpp"
#include "moe/core/view.hpp"

namespace moe {

/// The activations an MLP can use.
enum class ActivationKind { identity, relu, gelu, sigmoid, tanh };

inline const char* to_string(ActivationKind k) {
    switch (k) {
        case ActivationKind::identity: return "identity";
        case ActivationKind::relu: return "relu";
        case ActivationKind::gelu: return "gelu";
        case ActivationKind::sigmoid: return "sigmoid";
        case ActivationKind::tanh: return "tanh";
    }
    return "?";
}

inline ActivationKind activation_from_string(const std::string& s) {
    for (auto k : {ActivationKind::identity, ActivationKind::relu, ActivationKind::gelu, ActivationKind::sigmoid,
                   ActivationKind::tanh})
        if (s == to_string(k)) return k;
    throw config_error("moe: unknown activation '" + s + "' (expected identity, relu, gelu, sigmoid or tanh)");
}

namespace detail {

template <class T>
T stable_sigmoid(T z) {
    // exp of a non-positive number only: no overflow for |z| up to the type's limit.
    if (z >= T(0)) return T(1) / (T(1) + std::exp(-z));
    const T e = std::exp(z);
    return e / (T(1) + e);
}

/// Columns [c0, c1) of m (any column-major block with an outer stride) as a view.
template <class T>
ConstView<T> column_block(const ConstView<T>& m, Index c0, Index c1) {
    return ConstView<T>(m.data() + c0 * m.outerStride(), m.rows(), c1 - c0, m.outerStride());
}
template <class T>
MatrixView<T> column_block(MatrixView<T>& m, Index c0, Index c1) {
    return MatrixView<T>(m.data() + c0 * m.rows(), m.rows(), c1 - c0);
}

template <class T>
void activation_forward_serial(ActivationKind k, const ConstView<T>& x, MatrixView<T>& y) {
    switch (k) {
        case ActivationKind::identity: y = x; break;
        case ActivationKind::relu: y = x.cwiseMax(T(0)); break;
        case ActivationKind::gelu:
            // Eigen's erf: vectorised for float (within 4e-7 of std::erf, 24x faster), std::erf for double.
            y = (T(0.5) * x.array() * (T(1) + (x.array() * T(0.70710678118654752440)).erf())).matrix();
            break;
        case ActivationKind::sigmoid: y = x.unaryExpr([](T v) { return stable_sigmoid(v); }); break;
        case ActivationKind::tanh: y = x.array().tanh().matrix(); break;
    }
}

/// Runs body over ranges of [0, cols) columns on the threads. ReLU and identity give the same
/// bits however the columns are cut (a max, a select, a copy), so they take one range per thread
/// (for_each_range); the others evaluate vectorised approximations (erf, tanh, exp) whose scalar
/// tail may round differently, so their cut is fixed by the batch alone: chunks of 256 columns.
template <class F>
void for_each_column_range(ActivationKind k, Index cols, double flops, F&& body) {
    if (k == ActivationKind::relu || k == ActivationKind::identity)
        for_each_range(cols, flops, body);
    else
        parallel_for(cols, 256, flops, body);
}

/// y = f(x), x and y features x B; ranges of columns over the threads when the batch pays for it.
template <class T>
void activation_forward(ActivationKind k, const ConstView<T>& x, MatrixView<T>& y) {
    for_each_column_range(k, x.cols(), kElementwiseFlops * double(x.size()), [&](Index c0, Index c1) {
        MatrixView<T> yb = column_block(y, c0, c1);
        activation_forward_serial(k, column_block(x, c0, c1), yb);
    });
}

/// dx[i] = dy[i] where y[i] > 0, else 0 (ReLU's backward; the derivative at 0 is taken as 0, as
/// PyTorch does). A plain loop on purpose: Eigen's select() is scalar and branches, and ReLU's
/// signs are coin flips, so the branch mispredicts about every other element; without -march this
/// made the MMoE's backward 2.4x slower. Written so that the compiler vectorises it (both loads
/// unconditional: a compare and a mask), at any instruction set.
template <class T>
void relu_backward_span(const T* y, const T* dy, T* dx, Index n) {
    for (Index i = 0; i < n; ++i) {
        const T g = dy[i];
        dx[i] = y[i] > T(0) ? g : T(0);
    }
}

/// dx = dy * f'(x), written in terms of the output y where f allows it (saves keeping x).
template <class T>
void activation_backward_serial(ActivationKind k, const ConstView<T>& x, const ConstView<T>& y, const ConstView<T>& dy,
                                MatrixView<T>& dx) {
    switch (k) {
        case ActivationKind::identity: dx = dy; break;
        case ActivationKind::relu:
            for (Index j = 0; j < dy.cols(); ++j)
                relu_backward_span(y.data() + j * y.outerStride(), dy.data() + j * dy.outerStride(),
                                   dx.data() + j * dx.rows(), dy.rows());
            break;
        case ActivationKind::gelu:
            dx = (dy.array() * (T(0.5) * (T(1) + (x.array() * T(0.70710678118654752440)).erf()) +
                                x.array() * T(0.39894228040143267794) * (T(-0.5) * x.array().square()).exp()))
                     .matrix();
            break;
        case ActivationKind::sigmoid: dx = (dy.array() * y.array() * (T(1) - y.array())).matrix(); break;
        case ActivationKind::tanh: dx = (dy.array() * (T(1) - y.array().square())).matrix(); break;
    }
}

/// activation_backward_serial in ranges of columns over the threads. x may be empty where f's
/// derivative needs only y (its columns are then not looked at).
template <class T>
void activation_backward(ActivationKind k, const ConstView<T>& x, const ConstView<T>& y, const ConstView<T>& dy,
                         MatrixView<T>& dx) {
    for_each_column_range(k, dy.cols(), kElementwiseFlops * double(dy.size()), [&](Index c0, Index c1) {
        MatrixView<T> dxb = column_block(dx, c0, c1);
        const ConstView<T> xb = x.cols() == dy.cols() ? column_block(x, c0, c1) : x;
        activation_backward_serial(k, xb, column_block(y, c0, c1), column_block(dy, c0, c1), dxb);
    });
}

}  // namespace detail

/// Elementwise activation chosen at run time. Shapes: x, y, dy, dx all features x B.
/// No parameters. Keeps views of x (GELU needs it) and owns y, or writes y over x in a blocked MLP
/// pass (begin_forward_in_place).
template <class T>
class Activation : public ParameterFree {
public:
    using Scalar = T;
    explicit Activation(ActivationKind kind = ActivationKind::relu, std::string name = "")
        : kind_(kind), name_(name.empty() ? std::string("moe::") + to_string(kind) : std::move(name)) {}
    // A copy owns its output: one written over another layer's buffer is copied into its own.
    // (A gradient written over the caller's dy is the caller's: a copy does not keep it.)
    Activation(const Activation& o) : ParameterFree(o), kind_(o.kind_), name_(o.name_), x_(o.x_), y_(o.y_), dx_(o.dx_) {
        if (o.in_place_) y_.resize(o.over_.rows(), o.over_.cols()) = o.over_;
    }
    Activation& operator=(const Activation& o) {
        if (this != &o) *this = Activation(o);
        return *this;
    }
    // A move keeps an output written over another buffer: the buffer's memory moves with its owner.
    Activation(Activation&& o) noexcept
        : ParameterFree(std::move(o)), kind_(o.kind_), name_(std::move(o.name_)), x_(o.x_), in_place_(o.in_place_),
          dx_in_place_(o.dx_in_place_), y_(std::move(o.y_)), dx_(std::move(o.dx_)) {
        set_over(o.over_);
        set_map(dx_over_, o.dx_over_);
    }
    Activation& operator=(Activation&& o) noexcept {
        kind_ = o.kind_, name_ = std::move(o.name_), x_ = o.x_, in_place_ = o.in_place_, dx_in_place_ = o.dx_in_place_;
        y_ = std::move(o.y_), dx_ = std::move(o.dx_);
        set_over(o.over_);
        set_map(dx_over_, o.dx_over_);
        return *this;
    }

    ActivationKind kind() const { return kind_; }
    const std::string& name() const { return name_; }

    const MatrixView<T>& forward(const ConstView<T>& x) {
        x_ = x;
        in_place_ = false;
        return infer(x, y_);
    }
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& out) const {
        auto& y = out.resize(x.rows(), x.cols());
        detail::activation_forward(kind_, x, y);
        return y;
    }
    const MatrixView<T>& backward(const ConstView<T>& dy) {
        detail::check_shape(dy, y().rows(), y().cols(), name_, "backward", "output gradient");
        auto& dx = dx_.resize(dy.rows(), dy.cols());
        detail::activation_backward(kind_, x_, ConstView<T>(y()), dy, dx);
        return dx;
    }
    const MatrixView<T>& output() const { return y(); }
    /// Whether f's derivative needs only the output (all but GELU): then the output may overwrite x.
    bool derivative_from_output() const { return kind_ != ActivationKind::gelu; }

    // The training pass in column blocks (see MLP): begin_forward keeps x and sizes y for the whole
    // batch, forward_columns computes its columns [c0, c1) on the calling thread; begin_backward
    // checks dy and sizes dx, backward_columns computes dx's columns [c0, c1) from dy's.
    // begin_forward_in_place: the same, with the output written over x, a buffer of the caller's
    // that nothing else reads until the next forward (MLP: its linear layer's output). Only where
    // derivative_from_output(); saves 2% of MMoE's training step at batch 2048 (a fresh output
    // block is read from memory before it is written). begin_backward_in_place likewise writes dx
    // over dy (MLP: the input gradient of the layer above), for any kind.
    const MatrixView<T>& begin_forward(const ConstView<T>& x) {
        x_ = x;
        in_place_ = false;
        return y_.resize(x.rows(), x.cols());
    }
    const MatrixView<T>& begin_forward_in_place(MatrixView<T>& x) {
        if (!derivative_from_output())
            throw config_error(detail::concat(name_, ": the ", to_string(kind_), " derivative needs the input; no output in place"));
        x_ = x;
        in_place_ = true;
        set_over(x);
        y_.reserve(x.size());  // for a later forward of a smaller batch: no allocation then either
        return over_;
    }
    void forward_columns(Index c0, Index c1) {
        MatrixView<T> yb = detail::column_block(in_place_ ? over_ : y_.view(), c0, c1);
        detail::activation_forward_serial(kind_, detail::column_block(x_, c0, c1), yb);  // elementwise: x may be y
    }
    const MatrixView<T>& begin_backward(const ConstView<T>& dy) {
        detail::check_shape(dy, y().rows(), y().cols(), name_, "backward", "output gradient");
        dx_in_place_ = false;
        return dx_.resize(dy.rows(), dy.cols());
    }
    const MatrixView<T>& begin_backward_in_place(MatrixView<T>& dy) {
        detail::check_shape(dy, y().rows(), y().cols(), name_, "backward", "output gradient");
        dx_in_place_ = true;
        set_map(dx_over_, dy);
        dx_.reserve(dy.size());  // as begin_forward_in_place's
        return dx_over_;
    }
    void backward_columns(const ConstView<T>& dy, Index c0, Index c1) {
        MatrixView<T> dxb = detail::column_block(dx_in_place_ ? dx_over_ : dx_.view(), c0, c1);  // elementwise: dy may be dx
        detail::activation_backward_serial(kind_, detail::column_block(x_, c0, c1), detail::column_block(ConstView<T>(y()), c0, c1),
                                           detail::column_block(dy, c0, c1), dxb);
    }

    /// Sizes the buffers for up to rows x columns, so that varying shapes never allocate.
    void reserve(Index rows, Index columns) {
        y_.reserve(rows * columns);
        dx_.reserve(rows * columns);
    }

private:
    const MatrixView<T>& y() const { return in_place_ ? over_ : y_.view(); }
    static void set_map(MatrixView<T>& map, MatrixView<T>& to) { new (&map) MatrixView<T>(to.data(), to.rows(), to.cols()); }
    void set_over(MatrixView<T>& x) { set_map(over_, x); }

    ActivationKind kind_;
    std::string name_;
    ConstView<T> x_;
    bool in_place_ = false;                  // the output is over_: written over the input
    MatrixView<T> over_{nullptr, 0, 0};      // (begin_forward_in_place), else y_
    bool dx_in_place_ = false;               // the blocked input gradient is dx_over_: written over
    MatrixView<T> dx_over_{nullptr, 0, 0};   // dy (begin_backward_in_place), else dx_
    Buffer<T> y_, dx_;
};

/// A fixed-kind activation layer: ReLU<T>, GELU<T> (exact erf form), Sigmoid<T>, Tanh<T>, Identity<T>.
template <class T, ActivationKind K>
class FixedActivation : public Activation<T> {
public:
    explicit FixedActivation(std::string name = "") : Activation<T>(K, std::move(name)) {}
};

template <class T> using Identity = FixedActivation<T, ActivationKind::identity>;
template <class T> using ReLU = FixedActivation<T, ActivationKind::relu>;
template <class T> using GELU = FixedActivation<T, ActivationKind::gelu>;
template <class T> using Sigmoid = FixedActivation<T, ActivationKind::sigmoid>;
template <class T> using Tanh = FixedActivation<T, ActivationKind::tanh>;

}  // namespace moe
