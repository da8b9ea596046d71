#pragma once
// TargetAttention: DIN-style attention of a candidate item (the target) over a user's history
// (Zhou et al., "Deep Interest Network", KDD 2018). Each history item h gets a score from an MLP
// over [h; t; h - t; h * t]; the output is the sum of the items weighted by their scores. DIN does
// not normalise the scores (a user with more matching items gets a larger vector); softmax = true
// normalises them over each sample's items instead.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "moe/core/buffer.hpp"
#include "moe/core/errors.hpp"
#include "moe/core/module.hpp"
#include "moe/core/view.hpp"
#include "moe/layers/mlp.hpp"

namespace moe {

/// Attention of B targets over their histories. Shapes: history is dim x N, the items of every
/// sample's history one after another (sample b's are columns offsets[b] .. offsets[b+1] - 1;
/// offsets has B + 1 entries, from 0 to N, like Bags'); target is dim x B; forward gives dim x B
/// (zeros for an empty history). The scoring MLP maps 4 dim -> hidden... -> 1 (`activation` between
/// its layers, none after the last); its parameters are "mlp.{i}.weight" / "mlp.{i}.bias".
template <class T>
class TargetAttention : public Composite<TargetAttention<T>> {
public:
    using Scalar = T;

    TargetAttention(Index dim, const std::vector<Index>& hidden, bool softmax = false,
                    ActivationKind activation = ActivationKind::relu, std::string name = "moe::TargetAttention")
        : name_(std::move(name)), dim_(dim), softmax_(softmax),
          mlp_(make_mlp_spec(checked_dim(dim, name_) * 4, hidden, 1, activation, false, 0.0, false), name_ + ".mlp") {}

    Index dim() const { return dim_; }
    bool softmax() const { return softmax_; }
    const std::string& name() const { return name_; }

    template <class F>
    void for_each_child(F&& f) {
        f("mlp", mlp_);
    }

    /// Training forward; history, offsets and target must stay alive and unchanged until backward.
    /// Everything is checked first; errors name the layer and the value.
    const MatrixView<T>& forward(const ConstView<T>& history, const std::vector<std::int64_t>& offsets,
                                 const ConstView<T>& target) {
        check(history, offsets, target);
        history_ = history;
        target_ = target;
        offsets_ = &offsets;
        const Index n = history.cols(), b = target.cols(), d = dim_;
        sample_of_.resize(std::size_t(n));
        for (Index s = 0; s < b; ++s)
            for (auto i = offsets[std::size_t(s)]; i < offsets[std::size_t(s) + 1]; ++i) sample_of_[std::size_t(i)] = s;
        auto& x = features_.resize(4 * d, n);
        pair_features(history, offsets, target, x);
        auto& w = weights_.resize(1, n);
        if (n > 0) w = mlp_.forward(ConstView<T>(x));
        if (softmax_) softmax_per_sample(offsets, w);
        auto& y = out_.zeros(d, b);
        for (Index c = 0; c < n; ++c) y.col(sample_of_[std::size_t(c)]) += w(0, c) * history.col(c);
        return y;
    }

    /// Evaluation into out (dim x B, any writable block) with the caller's scratch (features, a, b);
    /// caches nothing, safe on a const layer from several threads with a scratch each. Checked as
    /// forward.
    template <class Out>
    void infer(const ConstView<T>& history, const std::vector<std::int64_t>& offsets, const ConstView<T>& target,
               Buffer<T>& features, Buffer<T>& a, Buffer<T>& b, Out&& out) const {
        check(history, offsets, target);
        const Index n = history.cols(), batch = target.cols(), d = dim_;
        auto& x = features.resize(4 * d, n);
        pair_features(history, offsets, target, x);
        if (n == 0) {
            out.setZero();
            return;
        }
        // The scores, then (softmax) their normalisation per sample in `features`, which the MLP no
        // longer needs: the same arithmetic as forward, so predict and the evaluation forward agree.
        const MatrixView<T>& scores = mlp_.infer(ConstView<T>(x), a, b);
        auto& w = features.resize(1, n);
        w = scores;
        if (softmax_) softmax_per_sample(offsets, w);
        out.setZero();
        for (Index s = 0; s < batch; ++s)
            for (auto i = offsets[std::size_t(s)]; i < offsets[std::size_t(s) + 1]; ++i) out.col(s) += w(0, Index(i)) * history.col(Index(i));
    }

    /// Back-propagates dy (dim x B): adds the MLP's parameter gradients and fills dhistory()
    /// (dim x N) and dtarget() (dim x B).
    void backward(const ConstView<T>& dy) {
        detail::require(offsets_ != nullptr, name_, "::backward: no forward before it");
        const Index n = history_.cols(), b = target_.cols(), d = dim_;
        detail::check_shape(dy, d, b, name_, "backward", "output gradient");
        const auto& w = weights_.view();
        auto& dh = dhistory_.resize(d, n);
        auto& dt = dtarget_.zeros(d, b);
        auto& da = dscores_.resize(1, n);
        for (Index c = 0; c < n; ++c) {  // the weighted sum: d/dh = w dy, d/dw = dy . h
            const Index s = sample_of_[std::size_t(c)];
            dh.col(c) = w(0, c) * dy.col(s);
            da(0, c) = dy.col(s).dot(history_.col(c));
        }
        if (softmax_)
            for (Index s = 0; s < b; ++s) {
                const Index begin = Index((*offsets_)[std::size_t(s)]), len = Index((*offsets_)[std::size_t(s) + 1]) - begin;
                if (len == 0) continue;
                auto das = da.middleCols(begin, len);
                const auto ws = w.middleCols(begin, len);
                const T mean = ws.cwiseProduct(das).sum();
                das = ws.cwiseProduct((das.array() - mean).matrix());
            }
        if (n == 0) return;
        const MatrixView<T>& dx = mlp_.backward(ConstView<T>(da), true);  // 4 dim x N
        for (Index c = 0; c < n; ++c) {  // x = [h; t; h - t; h * t]
            const Index s = sample_of_[std::size_t(c)];
            dh.col(c) += dx.col(c).segment(0, d) + dx.col(c).segment(2 * d, d) +
                         dx.col(c).segment(3 * d, d).cwiseProduct(target_.col(s));
            dt.col(s) += dx.col(c).segment(d, d) - dx.col(c).segment(2 * d, d) +
                         dx.col(c).segment(3 * d, d).cwiseProduct(history_.col(c));
        }
    }

    const MatrixView<T>& dhistory() const { return dhistory_.view(); }
    const MatrixView<T>& dtarget() const { return dtarget_.view(); }
    /// The weights of the last forward, 1 x N (the scores, or their softmax per sample).
    const MatrixView<T>& weights() const { return weights_.view(); }

private:
    /// x.col(c) = [h; t; h - t; h * t] for every history item c of every sample (4 dim x N).
    static void pair_features(const ConstView<T>& history, const std::vector<std::int64_t>& offsets, const ConstView<T>& target,
                              MatrixView<T>& x) {
        for (Index s = 0; s + 1 < Index(offsets.size()); ++s)
            for (auto i = offsets[std::size_t(s)]; i < offsets[std::size_t(s) + 1]; ++i) {
                const Index c = Index(i);
                x.col(c) << history.col(c), target.col(s), history.col(c) - target.col(s), history.col(c).cwiseProduct(target.col(s));
            }
    }
    /// The scores (1 x N) softmax-normalised over each sample's items.
    static void softmax_per_sample(const std::vector<std::int64_t>& offsets, MatrixView<T>& w) {
        for (Index s = 0; s + 1 < Index(offsets.size()); ++s) {
            const Index begin = Index(offsets[std::size_t(s)]), len = Index(offsets[std::size_t(s) + 1]) - begin;
            if (len == 0) continue;
            auto ws = w.middleCols(begin, len);
            const T top = ws.maxCoeff();
            ws = (ws.array() - top).exp().matrix();
            ws /= ws.sum();
        }
    }

    static Index checked_dim(Index dim, const std::string& name) {
        detail::require(dim > 0, name, ": dim must be positive, got ", dim);
        return dim;
    }

    void check(const ConstView<T>& history, const std::vector<std::int64_t>& offsets, const ConstView<T>& target) const {
        detail::check_rows(history, dim_, name_, "forward");
        detail::check_rows(target, dim_, name_, "forward");
        detail::require(Index(offsets.size()) == target.cols() + 1, name_, ": ", offsets.size(), " offsets for ", target.cols(),
                        " targets (expected one more than the targets)");
        detail::require(offsets.front() == 0, name_, ": offsets must start with 0, got ", offsets.front());
        for (std::size_t s = 1; s < offsets.size(); ++s)
            detail::require(offsets[s] >= offsets[s - 1], name_, ": offsets must not decrease, but offsets[", s, "] = ", offsets[s],
                            " < offsets[", s - 1, "] = ", offsets[s - 1]);
        detail::require(offsets.back() == history.cols(), name_, ": the last offset is ", offsets.back(), " but the history has ",
                        history.cols(), " items");
    }

    std::string name_;
    Index dim_;
    bool softmax_;
    MLP<T> mlp_;
    ConstView<T> history_, target_;
    const std::vector<std::int64_t>* offsets_ = nullptr;
    std::vector<Index> sample_of_;
    Buffer<T> features_, weights_, out_, dhistory_, dtarget_, dscores_;
};

}  // namespace moe
