#pragma once
#include <cmath>

#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// Scales the gradients so that their global L2 norm is at most max_norm, as
/// torch.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6), applied when below 1).
/// Returns the norm before clipping (non-finite if a gradient is).
template <class T>
T clip_grad_norm(Vector<T>& grads, double max_norm) {
    detail::require(max_norm > 0, "moe::clip_grad_norm: max_norm must be positive, got ", max_norm);
    const T norm = grads.norm();
    const T coef = T(max_norm) / (norm + T(1e-6));
    if (coef < T(1)) grads *= coef;
    return norm;
}

template <class Store>
auto clip_grad_norm(Store& store, double max_norm) {
    return clip_grad_norm(store.grads(), max_norm);
}

}  // namespace moe
