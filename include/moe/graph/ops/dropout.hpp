#pragma once
// torch.nn.Dropout(p=0.5): the input's shape.
#include "moe/graph/kernel.hpp"

namespace moe::graph::ops {

struct Dropout {
    static constexpr const char* type = "torch.nn.Dropout";
    static OpShape shape(const OpContext& c) {
        c.allow_params({"p"});
        c.expect_inputs(1, 1);
        const double p = c.number_param("p", 0.5);
        if (!(p >= 0.0 && p < 1.0)) throw c.error(moe::detail::concat("p must be in [0, 1), got ", p));
        return {c.input(0), 0.0, c.input(0).per_sample()};
    }

    /// Inverted dropout: in training each element is zeroed with probability p and the others
    /// scaled by 1 / (1 - p); evaluation copies. The mask stream is seeded from the model's seed.
    /// A frozen mask (freeze_masks, for gradient checks) is reused while the size is the same.
    template <class T>
    class Run final : public Kernel<T> {
    public:
        explicit Run(double p) : p_(p) {}
        void freeze_dropout(bool on) override { frozen_ = on; }

        void reset_parameters(Rng& rng) override { rng_ = Rng(rng.split()); }
        void set_training(bool on) override { training_ = on; }
        void infer(const std::vector<In<T>>& in, T* out, const Dims&) const override {
            std::copy(in[0].data, in[0].data + in[0].size(), out);
        }
        void forward(const std::vector<In<T>>& in, T* out, const Dims& d) override {
            const Index n = in[0].size();
            if (!training_ || p_ == 0.0) return infer(in, out, d);
            if (!(frozen_ && Index(mask_.size()) == n)) {
                mask_.resize(std::size_t(n));
                const T keep = T(1.0 / (1.0 - p_));
                for (T& m : mask_) m = rng_.uniform() < p_ ? T(0) : keep;
            }
            for (Index i = 0; i < n; ++i) out[i] = in[0].data[i] * mask_[std::size_t(i)];
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims&,
                      const std::vector<T*>& din) override {
            if (!din[0]) return;
            const Index n = in[0].size();
            const bool masked = training_ && p_ != 0.0;
            for (Index i = 0; i < n; ++i) din[0][i] += masked ? dout[i] * mask_[std::size_t(i)] : dout[i];
        }

    private:
        double p_;
        bool training_ = true, frozen_ = false;
        Rng rng_{0};
        std::vector<T> mask_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        return std::make_unique<Run<T>>(c.number_param("p", 0.5));
    }
};

}  // namespace moe::graph::ops
