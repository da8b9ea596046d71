#pragma once
// moe.PLE (the extraction levels of PLE as a node; one level is a CGC): `levels` levels of `tasks`
// task-specific experts groups (task_experts each) and shared_experts shared experts, every expert
// an MLP to expert_dim (expert_hidden, activation, batchnorm, expert_dropout, and the activation on
// its output unless expert_output_activation is false), softmax gates per task and a shared gate
// between levels; all levels have the same widths. Input [B, in], output [B, tasks, expert_dim]:
// task t's representation in [b, t] (torch.select gives it to a tower). Parameters as the library's
// PLE names them: "<node>.levels.{l}.experts.{e}.{i}.weight", "<node>.levels.{l}.task_gates.{t}.*",
// "<node>.levels.{l}.shared_gate.*".
#include "moe/graph/kernel.hpp"
#include "moe/graph/ops/block_params.hpp"
#include "moe/models/extraction_level.hpp"

namespace moe::graph::ops {

struct MoePLE {
    static constexpr const char* type = "moe.PLE";

    struct Spec {
        Index in = 0, tasks = 0, levels = 1;
        PLELevelSpec level;
        ActivationKind activation = ActivationKind::relu;
        bool batchnorm = false, output_activation = true;
        double dropout = 0.0;
        MLPSpec expert(Index in_features) const {
            return make_mlp_spec(in_features, level.expert_hidden, level.expert_dim, activation, batchnorm, dropout,
                                 output_activation);
        }
    };
    static Spec spec(const OpContext& c) {
        Spec s;
        s.in = features_input(c);
        s.tasks = c.int_param("tasks");
        s.levels = c.int_param("levels", 1);
        s.level.shared_experts = c.int_param("shared_experts", 1);
        s.level.task_experts = c.int_param("task_experts", 1);
        s.level.expert_dim = c.int_param("expert_dim");
        s.level.expert_hidden = widths_param(c, "expert_hidden");
        if (s.tasks <= 0 || s.levels <= 0 || s.level.expert_dim <= 0 || s.level.shared_experts < 0 ||
            s.level.task_experts < 0 || s.level.shared_experts + s.level.task_experts == 0)
            throw c.error(moe::detail::concat(
                "needs tasks, levels and expert_dim positive and at least one expert per gate, got tasks ", s.tasks,
                ", levels ", s.levels, ", expert_dim ", s.level.expert_dim, ", task_experts ", s.level.task_experts,
                ", shared_experts ", s.level.shared_experts));
        s.activation = activation_param(c);
        s.batchnorm = c.bool_param("batchnorm", false);
        s.dropout = dropout_param(c, "expert_dropout");
        s.output_activation = c.bool_param("expert_output_activation", true);
        return s;
    }

    static OpShape shape(const OpContext& c) {
        c.allow_params({"tasks", "levels", "shared_experts", "task_experts", "expert_hidden", "expert_dim",
                        "activation", "batchnorm", "expert_dropout", "expert_output_activation"});
        c.expect_inputs(1, 1);
        const Spec s = spec(c);
        OpShape r;
        r.out = Shape{{kBatch, s.tasks, s.level.expert_dim}};
        const double experts = double(s.tasks * s.level.task_experts + s.level.shared_experts);
        double in = double(s.in), macs = 0;
        for (Index l = 0; l < s.levels; ++l) {
            const bool last = l + 1 == s.levels;
            double w = in, params = 0;
            for (Index h : s.level.expert_hidden) {
                params += w * double(h) + double(h) + (s.batchnorm ? 2.0 * double(h) : 0.0);
                w = double(h);
            }
            params += w * double(s.level.expert_dim) + double(s.level.expert_dim);
            r.params += experts * params;
            macs += experts * params;  // the experts' multiply-adds (and their biases: a bound)
            const double per_gate = double(s.level.task_experts + s.level.shared_experts);
            r.params += double(s.tasks) * (in * per_gate + per_gate) + (last ? 0.0 : in * experts + experts);
            macs += double(s.tasks) * in * per_gate + (last ? 0.0 : in * experts);
            macs += double(s.tasks + (last ? 0 : 1)) * per_gate * double(s.level.expert_dim);
            in = double(s.level.expert_dim);
        }
        r.flops_per_sample = 2.0 * macs;
        return r;
    }

    /// The library's ExtractionLevels, one after the other (as PLE runs them before its towers).
    template <class T>
    class Run final : public Kernel<T> {
    public:
        explicit Run(const Spec& s) : s_(s) {
            levels_.reserve(std::size_t(s.levels));
            Index in = s.in;
            for (Index l = 0; l < s.levels; ++l) {
                levels_.emplace_back(s.tasks, in, l == 0, l + 1 == s.levels, s.level, s.expert(in), s.activation,
                                     "moe.PLE.levels." + std::to_string(l));
                in = s.level.expert_dim;
            }
        }

        void parameters(std::vector<std::pair<std::string, Param<T>*>>& out) override {
            for (std::size_t l = 0; l < levels_.size(); ++l)
                levels_[l].for_each_parameter("levels." + std::to_string(l), [&](const std::string& name, Param<T>& p) {
                    out.emplace_back(name, &p);
                });
        }
        void reset_parameters(Rng& rng) override {
            for (auto& level : levels_) level.reset_parameters(rng);
        }
        void set_training(bool on) override {
            for (auto& level : levels_) level.set_training(on);
        }
        void batchnorms(std::vector<std::pair<std::string, moe::BatchNorm1d<T>*>>& out) override {
            for (std::size_t l = 0; l < levels_.size(); ++l)
                levels_[l].for_each_batchnorm(
                    "levels." + std::to_string(l),
                    [&](const std::string& name, moe::BatchNorm1d<T>& bn) { out.emplace_back(name, &bn); });
        }
        void freeze_dropout(bool on) override {
            for (auto& level : levels_) level.for_each_dropout([&](moe::Dropout<T>& d) { d.freeze_mask(on); });
        }

        void infer(const std::vector<In<T>>& in, T* out, const Dims&) const override {
            thread_local Buffer<T> ea, eb, ga, gb, y0, y1;
            ConstView<T> h(in[0].data, s_.in, in[0].size() / s_.in);
            Buffer<T>* a = &y0;
            Buffer<T>* b = &y1;  // levels alternate between these two
            for (const auto& level : levels_) {
                h = level.infer(h, ea, eb, ga, gb, *a);
                std::swap(a, b);
            }
            std::copy(h.data(), h.data() + h.size(), out);
        }
        void forward(const std::vector<In<T>>& in, T* out, const Dims&) override {
            ConstView<T> h(in[0].data, s_.in, in[0].size() / s_.in);
            for (auto& level : levels_) h = level.forward(h);
            std::copy(h.data(), h.data() + h.size(), out);
        }
        void backward(const std::vector<In<T>>& in, const T*, const T* dout, const Dims&,
                      const std::vector<T*>& din) override {
            const Index batch = in[0].size() / s_.in;
            const MatrixView<T>* g = nullptr;
            ConstView<T> dy(dout, levels_.back().output_rows(), batch);
            for (std::size_t l = levels_.size(); l-- > 0;) {
                g = &levels_[l].backward(dy, din[0] != nullptr || l > 0);
                dy = *g;
            }
            if (!din[0]) return;
            MatrixView<T> d(din[0], s_.in, batch);
            if (this->fresh[0])
                d = *g;
            else
                d += *g;
        }
        bool assigns_fresh_grads() const override { return true; }

    private:
        Spec s_;
        std::vector<ExtractionLevel<T>> levels_;
    };
    template <class T>
    static std::unique_ptr<Kernel<T>> kernel(const OpContext& c, const Shape&) {
        return std::make_unique<Run<T>>(spec(c));
    }
};

}  // namespace moe::graph::ops
