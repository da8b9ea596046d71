#pragma once
// The dispatch plan of a sparse mixture, and its gather and its gather's backward.
//
// A router gives each token (a column of x) A assignments to experts (SparseMoE: its k choices;
// SparseMMoE: k choices of each of its G task gates). The plan sorts the assignments that run into
// contiguous per-expert blocks of "slots" (a counting sort), tokens in order within a block, so
// that each expert runs one GEMM per layer on its block (GroupedLinear's segments):
//
//   x (d x N) --gather--> xp (d x S), expert e on slots [offset[e], offset[e+1]) --> out (D x S)
//   --combine (routing/combine.hpp) over each assignment's slot--> y
//
// Assignments of one token to the same expert share a slot (two tasks choosing the same expert for
// a sample run it once). With a capacity, each expert keeps at most `capacity` slots; which
// assignments run: all first assignments (a = 0) before any second, ..., earlier tokens first
// (GShard's priority), so a token loses its later choices before anyone loses a first one. Within a
// block the tokens keep their order, so with every token on every expert each block is x itself.
#include <algorithm>
#include <vector>

#include "moe/core/threads.hpp"
#include "moe/core/types.hpp"
#include "moe/core/view.hpp"

namespace moe {

/// Where every assignment of a batch runs. Built by build(); all vectors keep their capacity, so
/// rebuilding for a batch no larger than before allocates nothing.
struct DispatchPlan {
    Index tokens = 0, assignments = 0, experts = 0;
    Index slots = 0;                  ///< S, the kept (token, expert) pairs
    std::vector<Index> offset;        ///< E + 1: expert e's block is slots [offset[e], offset[e + 1])
    std::vector<Index> routed;        ///< per expert: assignments the router gave it (before capacity)
    std::vector<Index> kept;          ///< per expert: slots that run (after capacity)
    std::vector<Index> slot_of;       ///< per assignment (a + A t): its slot, -1 when dropped
    std::vector<Index> token_of;      ///< per slot: its token
    std::vector<Index> token_offset;  ///< N + 1: token t's distinct slots are token_slots[token_offset[t] ..]
    std::vector<Index> token_slots;

    /// choice points at A x N expert indices (column t: token t's assignments, best first);
    /// capacity <= 0 means none.
    void build(const Index* choice, Index a_count, Index n, Index e_count, Index capacity) {
        tokens = n, assignments = a_count, experts = e_count;
        const auto un = static_cast<std::size_t>(n), ua = static_cast<std::size_t>(a_count);
        routed.assign(std::size_t(e_count), 0);
        kept.assign(std::size_t(e_count), 0);
        slot_of.assign(un * ua, -1);
        for (std::size_t i = 0; i < un * ua; ++i) ++routed[std::size_t(choice[i])];
        // Which assignments run, in priority order. shares(a, t): an earlier assignment of token t
        // (in index order) to the same expert that runs; then this one uses its slot.
        const Index cap = capacity > 0 ? capacity : n * a_count;
        constexpr Index kRuns = -2, kShares = -3;  // marks before the slots are numbered
        for (Index a = 0; a < a_count; ++a)
            for (Index t = 0; t < n; ++t) {
                const std::size_t i = std::size_t(a + a_count * t);
                const Index e = choice[i];
                bool shared = false;
                for (Index b = 0; b < a && !shared; ++b)
                    shared = choice[std::size_t(b + a_count * t)] == e && slot_of[std::size_t(b + a_count * t)] == kRuns;
                if (shared) slot_of[i] = kShares;
                else if (kept[std::size_t(e)] < cap) ++kept[std::size_t(e)], slot_of[i] = kRuns;
            }
        offset.resize(std::size_t(e_count + 1));
        offset[0] = 0;
        for (Index e = 0; e < e_count; ++e) offset[std::size_t(e + 1)] = offset[std::size_t(e)] + kept[std::size_t(e)];
        slots = offset[std::size_t(e_count)];
        // Slots token-major within each block; shared assignments take their first one's slot.
        fill_.assign(offset.begin(), offset.end() - 1);
        token_of.reserve(un * ua);  // the most slots a batch can have: later batches never regrow
        token_slots.reserve(un * ua);
        token_of.resize(std::size_t(slots));
        token_offset.resize(un + 1);
        token_slots.resize(std::size_t(slots));
        Index listed = 0;
        for (Index t = 0; t < n; ++t) {
            token_offset[std::size_t(t)] = listed;
            for (Index a = 0; a < a_count; ++a) {
                auto& s = slot_of[std::size_t(a + a_count * t)];
                const Index e = choice[std::size_t(a + a_count * t)];
                if (s == kRuns) {
                    s = fill_[std::size_t(e)]++;
                    token_of[std::size_t(s)] = t;
                    token_slots[std::size_t(listed++)] = s;
                } else if (s == kShares) {
                    for (Index b = 0; b < a; ++b)
                        if (choice[std::size_t(b + a_count * t)] == e && slot_of[std::size_t(b + a_count * t)] >= 0) {
                            s = slot_of[std::size_t(b + a_count * t)];
                            break;
                        }
                }
            }
        }
        token_offset[un] = listed;
    }

    /// Expert choice: chosen points at c x E token indices (column e: expert e's tokens, in token
    /// order). Expert e's block is slots [e c, (e + 1) c) in that order; a token's slots are listed
    /// in expert order. No assignments (slot() does not apply); routed = kept = c per expert.
    void build_expert_choice(const Index* chosen, Index c, Index n, Index e_count) {
        tokens = n, assignments = 0, experts = e_count;
        slots = c * e_count;
        const auto un = static_cast<std::size_t>(n), us = static_cast<std::size_t>(slots);
        routed.assign(std::size_t(e_count), c);
        kept.assign(std::size_t(e_count), c);
        slot_of.clear();
        offset.resize(std::size_t(e_count + 1));
        for (Index e = 0; e <= e_count; ++e) offset[std::size_t(e)] = e * c;
        token_of.assign(chosen, chosen + us);
        // Per token, its slots in slot order: a counting sort of the slots by token.
        token_offset.assign(un + 1, 0);
        for (std::size_t s = 0; s < us; ++s) ++token_offset[std::size_t(chosen[s]) + 1];
        for (std::size_t t = 0; t < un; ++t) token_offset[t + 1] += token_offset[t];
        fill_.assign(token_offset.begin(), token_offset.end() - 1);
        token_slots.resize(us);
        for (std::size_t s = 0; s < us; ++s) token_slots[std::size_t(fill_[std::size_t(chosen[s])]++)] = Index(s);
    }

    /// Slot of assignment a of token t, or -1 (top-k plans).
    Index slot(Index a, Index t) const { return slot_of[std::size_t(a + assignments * t)]; }
    /// Tokens none of whose assignments run.
    Index dropped_tokens() const {
        Index d = 0;
        for (Index t = 0; t < tokens; ++t) d += token_offset[std::size_t(t)] == token_offset[std::size_t(t + 1)];
        return d;
    }

private:
    std::vector<Index> fill_;
};

namespace detail {
/// xp.col(s) = x.col(token_of[s]) for every slot; xp is d x S (threads split the slots).
template <class T>
void gather(const ConstView<T>& x, const DispatchPlan& plan, MatrixView<T>& xp) {
    for_each_sample(plan.slots, double(x.rows()), [&](Index s) { xp.col(s) = x.col(plan.token_of[std::size_t(s)]); });
}

/// The gather's backward: dx.col(t) (+)= sum of dxp over token t's distinct slots (threads split
/// tokens). Without accumulate, a token with no slot gets zeros.
template <class T>
void gather_backward(const ConstView<T>& dxp, const DispatchPlan& plan, MatrixView<T>& dx, bool accumulate) {
    for_each_sample(plan.tokens, double(dx.rows()), [&](Index t) {
        if (!accumulate) dx.col(t).setZero();
        for (Index i = plan.token_offset[std::size_t(t)]; i < plan.token_offset[std::size_t(t + 1)]; ++i)
            dx.col(t) += dxp.col(plan.token_slots[std::size_t(i)]);
    });
}
}  // namespace detail

}  // namespace moe
