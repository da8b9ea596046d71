#pragma once
#include <string>

#include "moe/core/buffer.hpp"
#include "moe/core/errors.hpp"
#include "moe/core/module.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/view.hpp"

namespace moe {

namespace detail {
/// Column-wise softmax, stable: the column maximum is subtracted before exp.
template <class T, class In, class Out>
void softmax_columns(const In& x, Out& y) {
    for (Index j = 0; j < x.cols(); ++j) {
        const T m = x.col(j).maxCoeff();
        y.col(j) = (x.col(j).array() - m).exp().matrix();
        y.col(j) /= y.col(j).sum();
    }
}
/// dx = y * (dy - sum(y * dy)) per column.
template <class T, class Y, class DY, class DX>
void softmax_columns_backward(const Y& y, const DY& dy, DX& dx) {
    for (Index j = 0; j < y.cols(); ++j) {
        const T s = y.col(j).dot(dy.col(j));
        dx.col(j) = (y.col(j).array() * (dy.col(j).array() - s)).matrix();
    }
}
}  // namespace detail

/// Softmax over the features of each sample (each column), numerically stable.
/// Shapes: x, y, dy, dx all C x B. No parameters.
template <class T>
class Softmax : public ParameterFree {
public:
    using Scalar = T;
    explicit Softmax(std::string name = "moe::Softmax") : name_(std::move(name)) {}

    const MatrixView<T>& forward(const ConstView<T>& x) { return infer(x, y_); }
    const MatrixView<T>& infer(const ConstView<T>& x, Buffer<T>& out) const {
        if (x.rows() == 0) throw shape_error(name_ + "::forward: input has 0 rows");
        auto& y = out.resize(x.rows(), x.cols());
        detail::softmax_columns<T>(x, y);
        return y;
    }
    const MatrixView<T>& backward(const ConstView<T>& dy) {
        detail::check_shape(dy, y_.rows(), y_.cols(), name_, "backward", "output gradient");
        auto& dx = dx_.resize(dy.rows(), dy.cols());
        detail::softmax_columns_backward<T>(y_.view(), dy, dx);
        return dx;
    }
    const MatrixView<T>& output() const { return y_.view(); }

private:
    std::string name_;
    Buffer<T> y_, dx_;
};

}  // namespace moe
