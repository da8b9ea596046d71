#pragma once
// ConstView: the read-only input type of every forward/backward. It binds, without a copy, to any
// column-major Eigen object with direct memory access (Matrix, Map, Buffer views, column blocks).
// An expression that would need evaluating first (x.transpose(), 2 * x) fails to compile instead of
// silently binding to a temporary: layers keep a view of their input for backward, so the input must
// outlive the backward call.
#include <new>

#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"

namespace moe {

template <class T>
class ConstView : public Eigen::Map<const Matrix<T>, 0, Eigen::OuterStride<>> {
    using Base = Eigen::Map<const Matrix<T>, 0, Eigen::OuterStride<>>;

public:
    ConstView() : Base(nullptr, 0, 0, Eigen::OuterStride<>(1)) {}
    ConstView(const T* data, Index rows, Index cols) : Base(data, rows, cols, Eigen::OuterStride<>(rows > 0 ? rows : 1)) {}
    ConstView(const T* data, Index rows, Index cols, Index col_stride)
        : Base(data, rows, cols, Eigen::OuterStride<>(col_stride)) {}

    template <class D>
    ConstView(const Eigen::DenseBase<D>& m)  // NOLINT(google-explicit-constructor): a view, like Eigen::Ref
        : Base(m.derived().data(), m.rows(), m.cols(), Eigen::OuterStride<>(col_stride_of(m.derived()))) {
        static_assert(int(D::Flags) & Eigen::DirectAccessBit,
                      "moe::ConstView: pass a Matrix, Map or block with direct memory access, "
                      "not an expression; evaluate it into a Matrix first");
        static_assert(std::is_same_v<typename D::Scalar, T>, "moe::ConstView: scalar type mismatch");
        if (m.rows() > 1 && row_stride_of(m.derived()) != 1)
            throw shape_error("moe::ConstView: the matrix must be column-major with contiguous columns");
    }

    ConstView(const ConstView& o) : Base(o.data(), o.rows(), o.cols(), Eigen::OuterStride<>(o.outerStride())) {}
    ConstView& operator=(const ConstView& o) {
        if (this != &o) new (static_cast<Base*>(this)) Base(o.data(), o.rows(), o.cols(), Eigen::OuterStride<>(o.outerStride()));
        return *this;
    }

private:
    template <class D>
    static Index col_stride_of(const D& m) {
        return D::IsRowMajor ? m.innerStride() : m.outerStride();
    }
    template <class D>
    static Index row_stride_of(const D& m) {
        return D::IsRowMajor ? m.outerStride() : m.innerStride();
    }
};

}  // namespace moe
