#pragma once
// torch.sum and torch.mean(input, dim, keepdim=False): the dimensions of dim (one or a list)
// reduced, kept as 1 with keepdim.
#include <set>

#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

template <class Name>
struct Reduce {
    static constexpr const char* type = Name::value;
    static OpShape shape(const OpContext& c) {
        c.allow_params({"dim", "keepdim"});
        c.expect_inputs(1, 1);
        const Shape& x = c.input(0);
        std::set<Index> dims;
        for (Index d : c.int_list_param("dim"))
            if (!dims.insert(c.dim_index(d, x.rank())).second)
                throw c.error(moe::detail::concat("dim ", d, " is listed twice"));
        const bool keep = c.bool_param("keepdim", false);
        OpShape r;
        for (Index i = 0; i < x.rank(); ++i)
            if (!dims.count(i))
                r.out.dims.push_back(x[i]);
            else if (keep)
                r.out.dims.push_back(1);
        r.flops_per_sample = x.per_sample();
        return r;
    }

    /// Walks the input with the output's strides, 0 on the reduced dimensions: each output element
    /// sums its inputs in index order (a mean then divides by their count).
    template <class T>
    class Run final : public Kernel<T> {
    public:
        explicit Run(std::vector<bool> reduced) : reduced_(std::move(reduced)) {}
        void infer(const std::vector<In<T>>& in, T* out, const Dims& d) const override {
            const Dims& xd = *in[0].dims;
            std::fill(out, out + numel(d), T(0));
            Index j = 0;
            walk<1>(xd, {out_strides(xd)}, [&](const std::array<Index, 1>& o) { out[o[0]] += in[0].data[j++]; });
            if (is_mean()) {
                const T scale = T(1) / T(count(xd));
                for (Index i = 0; i < numel(d); ++i) out[i] *= scale;
            }
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims&,
                      const std::vector<T*>& din) override {
            if (!din[0]) return;
            const Dims& xd = *in[0].dims;
            const T scale = is_mean() ? T(1) / T(count(xd)) : T(1);
            Index j = 0;
            walk<1>(xd, {out_strides(xd)}, [&](const std::array<Index, 1>& o) { din[0][j++] += scale * dout[o[0]]; });
        }

    private:
        static bool is_mean() { return std::string(Name::value) == "torch.mean"; }
        Index count(const Dims& xd) const {
            Index n = 1;
            for (std::size_t i = 0; i < xd.size(); ++i)
                if (reduced_[i]) n *= xd[i];
            return n;
        }
        /// The input's index -> output offset: kept dimensions in order, reduced ones 0.
        Dims out_strides(const Dims& xd) const {
            Dims kept;
            for (std::size_t i = 0; i < xd.size(); ++i)
                if (!reduced_[i]) kept.push_back(xd[i]);
            const Dims ks = strides_of(kept);
            Dims s(xd.size(), 0);
            std::size_t k = 0;
            for (std::size_t i = 0; i < xd.size(); ++i)
                if (!reduced_[i]) s[i] = ks[k++];
            return s;
        }
        std::vector<bool> reduced_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        const Index r = c.input(0).rank();
        std::vector<bool> reduced(std::size_t(r), false);
        for (Index d : c.int_list_param("dim")) reduced[std::size_t(c.dim_index(d, r))] = true;
        return std::make_unique<Run<T>>(std::move(reduced));
    }
};

struct SumName {
    static constexpr const char* value = "torch.sum";
};
struct MeanName {
    static constexpr const char* value = "torch.mean";
};
using Sum = Reduce<SumName>;
using Mean = Reduce<MeanName>;

}  // namespace moe::graph::ops
