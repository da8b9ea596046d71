#pragma once
// Surfaces: where each sample of a batch was shown (home feed, search, related items, ...). A
// model built with MultiTaskSpec::surfaces = S > 1 has one tower per task and surface (a tower
// tree) and sends each sample through its own surface's towers only.
#include <string>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// The surface of every sample of a batch: one id per sample (a view of the caller's ids, which
/// must outlive the call), or one id for the whole batch (ranking candidates for one request).
/// The default, "none given", is what a model without surfaces expects (every sample on surface
/// 0); a model with surfaces refuses it.
class SurfaceIds {
public:
    SurfaceIds() = default;
    /// Every sample on `surface`.
    SurfaceIds(Index surface)
        : uniform_(surface), given_(true) {}  // NOLINT(google-explicit-constructor): a single id reads naturally
    /// Sample j on ids[j], j < n.
    SurfaceIds(const Index* ids, Index n) : ids_(ids), n_(n), per_sample_(true), given_(true) {}
    SurfaceIds(const std::vector<Index>& ids)  // NOLINT(google-explicit-constructor)
        : SurfaceIds(ids.data(), Index(ids.size())) {}

    bool per_sample() const { return per_sample_; }
    /// False for the default (no surface named).
    bool given() const { return given_; }
    /// The surface of sample j.
    Index operator[](Index j) const { return per_sample() ? ids_[j] : uniform_; }
    /// The surfaces of samples [begin, begin + len).
    SurfaceIds block(Index begin, Index len) const { return per_sample() ? SurfaceIds(ids_ + begin, len) : *this; }

    /// Checks the ids against a batch of `batch` samples and a model of `surfaces` surfaces:
    /// shape_error when there is not one id per sample, config_error naming the sample when an id
    /// is outside [0, surfaces). Errors name `who` and, when given, `fn` ("who::fn"); nothing is
    /// allocated unless there is an error.
    template <class Who>  // a std::string or a literal: no string is built unless there is an error
    void check(Index batch, Index surfaces, const Who& who, const char* fn = nullptr) const {
        const char* sep = fn ? "::" : "";
        const char* f = fn ? fn : "";
        if (!given_) {
            detail::require(surfaces == 1, who, sep, f, ": the model has ", surfaces,
                            " surfaces (a tower per task and surface); pass each sample's surface (SurfaceIds)");
            return;
        }
        if (!per_sample()) {
            if (uniform_ < 0 || uniform_ >= surfaces)
                throw config_error(detail::concat(who, sep, f, ": surface ", uniform_, " is unknown (the model has ", known(surfaces), ")"));
            return;
        }
        if (n_ != batch) throw shape_error(detail::concat(who, sep, f, ": ", n_, " surface ids for a batch of ", batch, " samples"));
        for (Index j = 0; j < n_; ++j)
            if (ids_[j] < 0 || ids_[j] >= surfaces)
                throw config_error(
                    detail::concat(who, sep, f, ": surface ", ids_[j], " of sample ", j, " is unknown (the model has ", known(surfaces), ")"));
    }

private:
    static std::string known(Index surfaces) {
        return surfaces == 1 ? "1 surface: 0" : detail::concat(surfaces, " surfaces: 0 to ", surfaces - 1);
    }

    const Index* ids_ = nullptr;
    Index n_ = 0;
    Index uniform_ = 0;
    bool per_sample_ = false, given_ = false;
};

namespace detail {
/// A data set's surface column as SurfaceIds: per sample, or none given when it is empty.
inline SurfaceIds surface_ids(const std::vector<Index>& ids) { return ids.empty() ? SurfaceIds() : SurfaceIds(ids); }

/// Checks a data set's surface column (`ids`: one per sample, or empty for "no surfaces") against
/// its n samples and a model of `surfaces` surfaces. Errors name `who`.
inline void check_surface_column(const std::vector<Index>& ids, Index n, Index surfaces, const std::string& who) {
    if (ids.empty()) {
        require(surfaces == 1, who, ": the model has ", surfaces,
                " surfaces but the data names none (set its surfaces: one id per sample)");
        return;
    }
    SurfaceIds(ids).check(n, surfaces, who);
}

/// fit()'s check that every surface of a tower tree has training samples: a surface without any
/// would keep its towers at their initial values and predict noise.
inline void check_surfaces_trained(const std::vector<Index>& ids, Index surfaces, const std::string& who) {
    if (surfaces == 1) return;
    std::vector<Index> count(std::size_t(surfaces), 0);
    for (Index id : ids) ++count[std::size_t(id)];
    for (Index s = 0; s < surfaces; ++s)
        require(count[std::size_t(s)] > 0, who, ": surface ", s,
                " has no training samples; its towers would never be trained (the model has ", surfaces, " surfaces)");
}

/// The samples of a batch grouped by surface, each group in batch order (a stable counting sort):
/// order[begin[s] .. begin[s + 1]) are the samples of surface s. Storage is reused.
struct SurfaceGroups {
    std::vector<Index> order, begin;

    void build(const SurfaceIds& ids, Index batch, Index surfaces) {
        begin.assign(std::size_t(surfaces + 1), 0);
        for (Index j = 0; j < batch; ++j) ++begin[std::size_t(ids[j] + 1)];
        for (Index s = 0; s < surfaces; ++s) begin[std::size_t(s + 1)] += begin[std::size_t(s)];
        order.resize(std::size_t(batch));
        std::vector<Index>& next = cursor_;
        next.assign(begin.begin(), begin.end() - 1);
        for (Index j = 0; j < batch; ++j) order[std::size_t(next[std::size_t(ids[j])]++)] = j;
    }
    Index start(Index s) const { return begin[std::size_t(s)]; }
    Index count(Index s) const { return begin[std::size_t(s + 1)] - begin[std::size_t(s)]; }

private:
    std::vector<Index> cursor_;
};
}  // namespace detail

}  // namespace moe
