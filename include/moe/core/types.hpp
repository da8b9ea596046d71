#pragma once
// Matrix types. A batch is column-major `features x batch`: one sample is one contiguous column,
// which is Eigen's native order and byte for byte a PyTorch row-major (batch, features) tensor.
#include <Eigen/Core>
#include <cstdint>
#include <type_traits>

namespace moe {

using Index = Eigen::Index;

/// Dense column-major matrix (features x batch for activations, out x in for weights).
template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
/// Dense column vector.
template <class T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
/// Mutable view of memory owned elsewhere (parameter store, workspace buffers).
template <class T>
using MatrixView = Eigen::Map<Matrix<T>>;
template <class T>
using VectorView = Eigen::Map<Vector<T>>;
/// Row-major matrix: PyTorch's memory layout, used for parameters.
template <class T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ParamView = Eigen::Map<RowMajorMatrix<T>>;
/// Read-only argument type: binds to a Matrix, a Map or a contiguous block without a copy.
template <class T>
using ConstRef = Eigen::Ref<const Matrix<T>>;

template <class T>
constexpr void check_scalar() {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "moe: the scalar type must be float or double");
}

}  // namespace moe
