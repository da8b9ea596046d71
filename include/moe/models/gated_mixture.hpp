#pragma once
// The gated sums of a mixture model, for all gates at once.
//
// Expert outputs O are (E D) x B and gate probabilities P are (G E) x B, so the column of sample b
// holds O_b, a D x E matrix, and P_b, an E x G matrix. The mixtures M, (G D) x B, are per sample
// M_b = O_b P_b: each mixture column is a sum of E expert columns scaled by the gate, which the
// loops below write as contiguous axpys over D (vectorised), samples spread over threads.
// Backward: dO_b = dM_b P_b^T and dP_b = O_b^T dM_b.
#include "moe/core/threads.hpp"
#include "moe/core/types.hpp"

namespace moe::detail {

/// M = per-sample O_b P_b. o: (E D) x B, p: (G E) x B, m: (G D) x B, all contiguous.
template <class T>
void gated_mix_forward(const T* o, const T* p, T* m, Index batch, Index dim, Index experts, Index gates) {
    for_each_sample(batch, double(dim * experts * gates), [&](Index b) {
        Eigen::Map<const Matrix<T>> ob(o + b * experts * dim, dim, experts);
        Eigen::Map<const Matrix<T>> pb(p + b * gates * experts, experts, gates);
        Eigen::Map<Matrix<T>> mb(m + b * gates * dim, dim, gates);
        for (Index g = 0; g < gates; ++g) {
            mb.col(g) = pb(0, g) * ob.col(0);
            for (Index e = 1; e < experts; ++e) mb.col(g) += pb(e, g) * ob.col(e);
        }
    });
}

/// dO_b = dM_b P_b^T and dP_b = O_b^T dM_b. dm: (G D) x B; do_: (E D) x B; dp: (G E) x B.
template <class T>
void gated_mix_backward(const T* o, const T* p, const T* dm, T* d_o, T* dp, Index batch, Index dim, Index experts,
                        Index gates) {
    for_each_sample(batch, 2.0 * double(dim * experts * gates), [&](Index b) {
        Eigen::Map<const Matrix<T>> ob(o + b * experts * dim, dim, experts);
        Eigen::Map<const Matrix<T>> pb(p + b * gates * experts, experts, gates);
        Eigen::Map<const Matrix<T>> dmb(dm + b * gates * dim, dim, gates);
        Eigen::Map<Matrix<T>> dob(d_o + b * experts * dim, dim, experts);
        Eigen::Map<Matrix<T>> dpb(dp + b * gates * experts, experts, gates);
        for (Index e = 0; e < experts; ++e) {
            dob.col(e) = pb(e, 0) * dmb.col(0);
            for (Index g = 1; g < gates; ++g) dob.col(e) += pb(e, g) * dmb.col(g);
            for (Index g = 0; g < gates; ++g) dpb(e, g) = ob.col(e).dot(dmb.col(g));
        }
    });
}

}  // namespace moe::detail
