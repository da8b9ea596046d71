#pragma once
// The one combine of the library: gate-weighted sums of expert output columns, forward and backward.
//
// Every mixture model computes, per sample b and gate g (a task's gate, PLE's shared gate, or the
// single "gate" of a token-level layer),
//
//     y_{g,b} = sum_j  w(b, g, j) * src(b, g, j)          (vectors of D values)
//
// over the gate's terms j: MMoE sums all E experts (terms 0..E-1, src the expert's output column of
// the sample), a PLE level each gate's expert list, SparseMMoE and SparseMoE the k chosen experts
// (src a slot of a gathered expert block, absent when capacity dropped it). The models differ only
// in the terms, which they pass as callables; the loops (contiguous axpys over D, vectorised;
// samples over threads) are here once. y is (G D) x B column-major: column b holds the G outputs.
//
// Backward: dsrc(b, g, j) += w * dy_{g,b} and dw(b, g, j) = src . dy_{g,b}. A sample's sources must
// belong to that sample only (its expert columns, its slots), so threads split samples without
// write conflicts; the caller zeroes dsrc first when several terms share a source.
#include "moe/core/threads.hpp"
#include "moe/core/types.hpp"

namespace moe::detail {

/// y (G D) x B, contiguous. terms(b, g) is the number of terms of gate g for sample b (the same for
/// every sample but in expert-choice routing, where a token has as many experts as took it);
/// weight(b, g, j) a scalar;
/// source(b, g, j) a pointer to D values, or nullptr for a term that contributes nothing.
/// `work` (multiply-adds per sample) decides whether threads pay.
template <class T, class Terms, class Weight, class Source>
void combine(T* y, Index batch, Index gates, Index dim, Terms&& terms, Weight&& weight, Source&& source, double work) {
    for_each_sample(batch, work, [&](Index b) {
        for (Index g = 0; g < gates; ++g) {
            Eigen::Map<Vector<T>> yg(y + (b * gates + g) * dim, dim);
            yg.setZero();
            const Index n = terms(b, g);
            for (Index j = 0; j < n; ++j)
                if (const T* s = source(b, g, j)) yg += weight(b, g, j) * Eigen::Map<const Vector<T>>(s, dim);
        }
    });
}

/// Backward of combine: for every term, dsrc += w dy_g (accumulated: zero dsrc first when terms
/// share sources) and dweight = src . dy_g. dsource(b, g, j) gives the pointer matching source.
/// With first_gate_writes, gate 0 writes dsrc instead of adding to it, so dsrc need not be zeroed:
/// only for callers whose gates all have the same non-null sources per sample (MMoE's E experts),
/// where it saves a pass over the whole expert-output gradient.
template <class T, class Terms, class Weight, class Source, class DSource, class DWeight>
void combine_backward(const T* dy, Index batch, Index gates, Index dim, Terms&& terms, Weight&& weight, Source&& source,
                      DSource&& dsource, DWeight&& dweight, double work, bool first_gate_writes = false) {
    for_each_sample(batch, work, [&](Index b) {
        for (Index g = 0; g < gates; ++g) {
            const Eigen::Map<const Vector<T>> dyg(dy + (b * gates + g) * dim, dim);
            const Index n = terms(b, g);
            for (Index j = 0; j < n; ++j) {
                const T* s = source(b, g, j);
                if (!s) {
                    dweight(b, g, j) = T(0);
                    continue;
                }
                dweight(b, g, j) = Eigen::Map<const Vector<T>>(s, dim).dot(dyg);
                Eigen::Map<Vector<T>> ds(dsource(b, g, j), dim);
                if (first_gate_writes && g == 0) ds = weight(b, g, j) * dyg;
                else ds += weight(b, g, j) * dyg;
            }
        }
    });
}

}  // namespace moe::detail
