#pragma once
// A model written as a YAML graph, compiled to a plan that trains and serves like MMoE.
//
// Compilation: the YAML is loaded and checked (graph/graph_check.hpp), every node gets its op's
// kernel (graph/kernel.hpp), and the parameters are laid out in one ParameterStore under PyTorch's
// names ("<node>.weight"), in node order. Linears that read the same value (the experts and gates
// of an MMoE) are fused: the group runs as one grouped GEMM forward and one for its weight
// gradients (graph/fused_linear.hpp).
//
// Running: nodes run in file order on whole batches; the plan owns one buffer per value and per
// value's gradient, sized on the first batch of a size and reused (no allocation per step after
// that). Backward visits the nodes in reverse, each adding its inputs' gradients.
//
// Data: x is the library's features x B batch. The graph's inputs take its rows in order (an input
// [B, 4, 8] takes 32 rows, its sample's elements in PyTorch's order). Outputs are the tasks: each
// [B, outputs] output is the task's outputs x B view that the losses and metrics read.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "moe/core/buffer.hpp"
#include "moe/core/errors.hpp"
#include "moe/core/parameters.hpp"
#include "moe/core/view.hpp"
#include "moe/graph/fused_linear.hpp"
#include "moe/graph/graph_check.hpp"
#include "moe/graph/yaml_loader.hpp"
#include "moe/models/inference.hpp"
#include "moe/models/surfaces.hpp"
#include "moe/models/task.hpp"

namespace moe::graph {

/// What a graph model is built from: the YAML text, and the name its error messages use.
struct GraphModelSpec {
    std::string yaml;
    std::string file = "model.yaml";
};

/// The spec of the YAML file at path (io_error naming it when it cannot be read).
inline GraphModelSpec graph_spec_from_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw io_error(path + ": cannot open the model graph");
    std::stringstream text;
    text << f.rdbuf();
    return {text.str(), path};
}

/// A multi-task model from a YAML graph. Shapes: x is in_features() x B (the inputs' elements per
/// sample, in the order of the inputs block); forward() gives, per output (task), its outputs x B
/// logits or values; predict() the predictions after the task heads (sigmoid, softmax). Use it as
/// Model<GraphModel<T>> with fit, evaluate, predict_all, rank_candidates, save and load.
template <class T>
class GraphModel {
public:
    using Scalar = T;
    using Spec = GraphModelSpec;

    explicit GraphModel(const GraphModelSpec& spec)
        : spec_(spec), graph_(check_graph(parse_graph_yaml(spec.yaml, spec.file))) {
        compile();
    }
    /// A copy has its own kernels (built from the spec) and the original's buffers (BatchNorm's
    /// running statistics); Model<> re-binds its parameters to the copied store.
    GraphModel(const GraphModel& o) : GraphModel(o.spec_) { copy_state(o); }
    GraphModel& operator=(const GraphModel& o) {
        if (this != &o) {
            GraphModel copy(o);
            *this = std::move(copy);
        }
        return *this;
    }
    GraphModel(GraphModel&&) noexcept = default;
    GraphModel& operator=(GraphModel&&) noexcept = default;

    const GraphModelSpec& spec() const { return spec_; }
    const CheckedGraph& graph() const { return graph_; }
    const std::vector<TaskSpec>& tasks() const { return tasks_; }
    Index in_features() const { return in_features_; }
    Index surfaces() const { return 1; }
    const std::string& name() const { return spec_.file; }
    /// The block nodes' auxiliary losses of the last forward (backward includes their gradients).
    double aux_loss() const {
        double total = 0;
        for (const auto& k : kernels_) total += k->aux_loss();
        return total;
    }
    /// Linear groups fused into one GEMM each (node names per group).
    std::vector<std::vector<std::string>> fused_groups() const {
        std::vector<std::vector<std::string>> out;
        for (const auto& g : groups_) {
            out.emplace_back();
            for (std::size_t n : g.nodes()) out.back().push_back(graph_.nodes[n].name);
        }
        return out;
    }

    // ---- the module contract ----
    template <class F>
    void for_each_parameter(const std::string& prefix, F&& f) {
        std::vector<std::pair<std::string, Param<T>*>> list;
        for (std::size_t n = 0; n < kernels_.size(); ++n) {
            list.clear();
            kernels_[n]->parameters(list);
            for (auto& [name, p] : list) f(join_name(prefix, graph_.nodes[n].name + "." + name), *p);
        }
    }
    void reset_parameters(Rng& rng) {
        for (auto& k : kernels_) k->reset_parameters(rng);
    }
    void set_training(bool on) {
        training_ = on;
        for (auto& k : kernels_) k->set_training(on);
    }
    void train() { set_training(true); }
    void eval() { set_training(false); }
    bool training() const { return training_; }
    /// f(name, BatchNorm1d<T>&) for every BatchNorm1d node (model files keep their running statistics).
    template <class F>
    void for_each_batchnorm(const std::string& prefix, F&& f) {
        std::vector<std::pair<std::string, BatchNorm1d<T>*>> list;
        for (std::size_t n = 0; n < kernels_.size(); ++n) {
            list.clear();
            kernels_[n]->batchnorms(list);
            for (auto& [name, bn] : list) f(join_name(join_name(prefix, graph_.nodes[n].name), name), *bn);
        }
    }
    /// Dropout nodes reuse their masks while the shape stays (gradient checks need one function).
    void freeze_dropout(bool on = true) {
        for (auto& k : kernels_) k->freeze_dropout(on);
    }

    /// Training forward of a batch; one outputs x B view per task. x must stay alive and unchanged
    /// until backward.
    const std::vector<ConstView<T>>& forward(const ConstView<T>& x, const SurfaceIds& surfaces = {}) {
        check_input(x, surfaces, "forward");
        const Index n = x.cols();
        batch_ = n;
        resolve_dims(n, dims_);
        set_inputs(x, value_ptr_, values_);
        for (std::size_t i = 0; i < kernels_.size(); ++i) {
            const std::size_t v = graph_.spec.inputs.size() + i;
            values_[v].resize(std::size_t(numel(dims_[v])));
            value_ptr_[v] = values_[v].data();
        }
        for (std::size_t i = 0; i < kernels_.size(); ++i) {
            const std::size_t v = graph_.spec.inputs.size() + i;
            if (group_of_[i] >= 0) {
                FusedLinear<T>& g = groups_[std::size_t(group_of_[i])];
                if (g.nodes().front() == i) g.forward(value_ptr_[g.input()], rows_of(g, dims_), values_out(g, values_));
                continue;
            }
            kernels_[i]->forward(inputs_of(i, dims_, value_ptr_), values_[v].data(), dims_[v]);
        }
        return outputs(value_ptr_, out_);
    }

    /// Backward of the last forward: d holds each task's gradient (outputs x B). Adds the parameter
    /// gradients; returns dx (in_features x B) when input_grad, else an empty view.
    const MatrixView<T>& backward(const std::vector<ConstView<T>>& d, bool input_grad = false) {
        moe::detail::require(d.size() == tasks_.size(), spec_.file, "::backward: ", d.size(), " output gradients for ",
                             tasks_.size(), " tasks");
        const std::size_t inputs = graph_.spec.inputs.size();
        // Gradient buffers are not zeroed: the first contribution to each writes it (a kernel's
        // fresh input), or the buffer is zeroed just before a kernel that only adds.
        for (std::size_t v = 0; v < dims_.size(); ++v) {
            const bool needed = v >= inputs || input_grad;
            grads_[v].resize(needed ? std::size_t(numel(dims_[v])) : 0);
        }
        written_.assign(dims_.size(), 0);
        for (std::size_t t = 0; t < d.size(); ++t) {
            moe::detail::check_shape(d[t], tasks_[t].outputs(), batch_, spec_.file, "backward", "output gradient");
            MatrixView<T> g(grads_[graph_.outputs[t]].data(), tasks_[t].outputs(), batch_);
            if (written_[graph_.outputs[t]])
                g += d[t];
            else
                g = d[t];
            written_[graph_.outputs[t]] = 1;
        }
        for (std::size_t i = kernels_.size(); i-- > 0;) {
            if (!reaches_output_[i] || absorbed_relu_[i]) continue;
            const std::size_t v = inputs + i;
            if (group_of_[i] >= 0) {
                FusedLinear<T>& g = groups_[std::size_t(group_of_[i])];
                if (g.nodes().front() != i) continue;
                const std::size_t u = g.input();
                T* dx = grad_ptr(u);
                g.backward(value_ptr_[u], rows_of(g, dims_), grads_out(g), relu_outs(g), dx, dx && !written_[u]);
                if (dx) written_[u] = 1;
                continue;
            }
            Kernel<T>& k = *kernels_[i];
            const auto& ins = graph_.nodes[i].inputs;
            std::vector<T*>& din = din_[i];
            k.fresh.assign(ins.size(), 0);
            for (std::size_t a = 0; a < ins.size(); ++a) {
                const std::size_t u = ins[a];
                din[a] = grad_ptr(u);
                if (!din[a] || written_[u]) continue;
                const bool read_twice = std::count(ins.begin(), ins.end(), u) > 1;
                if (k.assigns_fresh_grads() && !read_twice)
                    k.fresh[a] = 1;
                else
                    std::fill(grads_[u].begin(), grads_[u].end(), T(0));
                written_[u] = 1;
            }
            k.backward(inputs_of(i, dims_, value_ptr_), values_[v].data(), grads_[v].data(), dims_[v], din);
        }
        for (std::size_t u = 0; u < inputs; ++u)  // an input no node reads has a zero gradient
            if (!written_[u]) std::fill(grads_[u].begin(), grads_[u].end(), T(0));
        if (!input_grad) {
            new (&dx_) MatrixView<T>(nullptr, 0, 0);
            return dx_;
        }
        auto& dx = dx_buf_.resize(in_features_, batch_);
        Index row = 0;
        for (std::size_t k = 0; k < inputs; ++k) {
            const Index f = Index(graph_.spec.inputs[k].shape.per_sample());
            dx.middleRows(row, f) = ConstView<T>(grads_[k].data(), f, batch_);
            row += f;
        }
        new (&dx_) MatrixView<T>(dx.data(), dx.rows(), dx.cols());
        return dx_;
    }

    /// The predictions (after the heads: sigmoid for binary tasks, softmax for multiclass, the
    /// value for regression, ReLU'd when relu_output) of x in evaluation semantics, whatever the
    /// model's mode; blocks of samples on separate threads, buffers in ws (reuse it).
    const std::vector<ConstView<T>>& predict(const ConstView<T>& x, InferenceWorkspace<T>& ws,
                                             const SurfaceIds& surfaces = {}) const {
        check_input(x, surfaces, "predict");
        return moe::detail::predict_in_blocks(
            x, surfaces, tasks_, graph_.flops_per_sample() / 2.0, ws,
            [&](const ConstView<T>& xb, const SurfaceIds&, InferenceScratch<T>& s) -> const std::vector<ConstView<T>>& {
                return infer_block(xb, s);
            });
    }

private:
    void compile() {
        const auto& registry = op_registry();
        const std::size_t inputs = graph_.spec.inputs.size();
        for (const auto& in : graph_.spec.inputs) in_features_ += Index(in.shape.per_sample());
        for (std::size_t i = 0; i < graph_.nodes.size(); ++i) {
            const NodeSpec& n = graph_.spec.nodes[i];
            std::vector<Shape> shapes;
            for (std::size_t v : graph_.nodes[i].inputs) shapes.push_back(graph_.values[v]);
            kernels_.push_back(
                registry.at(n.type).template kernel<T>()(OpContext(n, std::move(shapes)), graph_.nodes[i].out));
            din_.emplace_back(graph_.nodes[i].inputs.size(), nullptr);
        }
        for (const auto& o : graph_.spec.outputs) tasks_.push_back(o.task);
        // Which nodes an output depends on (the others are skipped in backward).
        reaches_output_.assign(graph_.nodes.size(), false);
        std::vector<bool> live(graph_.values.size(), false);
        for (std::size_t v : graph_.outputs) live[v] = true;
        for (std::size_t i = graph_.nodes.size(); i-- > 0;)
            if (live[inputs + i]) {
                reaches_output_[i] = true;
                for (std::size_t v : graph_.nodes[i].inputs) live[v] = true;
            }
        fuse_linears();
        const std::size_t values = graph_.values.size();
        values_.resize(values);
        grads_.resize(values);
        value_ptr_.assign(values, nullptr);
        dims_.resize(values);
        out_.resize(tasks_.size());
    }

    /// Groups the Linear nodes that read the same value with the same bias setting (two or more).
    void fuse_linears() {
        group_of_.assign(graph_.nodes.size(), -1);
        std::vector<bool> taken(graph_.nodes.size(), false);
        for (std::size_t i = 0; i < graph_.nodes.size(); ++i) {
            auto* first = linear(i);
            if (!first || taken[i]) continue;
            std::vector<std::size_t> members{i};
            for (std::size_t j = i + 1; j < graph_.nodes.size(); ++j) {
                auto* other = linear(j);
                if (other && !taken[j] && graph_.nodes[j].inputs[0] == graph_.nodes[i].inputs[0] &&
                    other->has_bias() == first->has_bias() && reaches_output_[j] == reaches_output_[i])
                    members.push_back(j);
            }
            if (members.size() < 2) continue;
            std::vector<typename ops::Linear::template Run<T>*> kernels;
            for (std::size_t m : members) {
                taken[m] = true;
                group_of_[m] = Index(groups_.size());
                kernels.push_back(linear(m));
            }
            groups_.emplace_back(members, kernels, graph_.nodes[i].inputs[0]);
        }
        // A member whose output only a ReLU reads (and no output names) leaves the ReLU's backward to
        // the group's gather of output gradients (FusedLinear::backward).
        relu_of_.assign(graph_.nodes.size(), -1);
        absorbed_relu_.assign(graph_.nodes.size(), false);
        std::vector<int> readers(graph_.values.size(), 0);
        for (const auto& node : graph_.nodes)
            for (std::size_t v : node.inputs) ++readers[v];
        for (std::size_t v : graph_.outputs) readers[v] += 2;
        const std::size_t inputs = graph_.spec.inputs.size();
        for (std::size_t j = 0; j < graph_.nodes.size(); ++j) {
            const std::string& type = graph_.nodes[j].type;
            if (type != ops::ReLU::type && type != ops::FunctionalReLU::type) continue;
            const std::size_t u = graph_.nodes[j].inputs[0];
            if (u < inputs || readers[u] != 1 || group_of_[u - inputs] < 0) continue;
            relu_of_[u - inputs] = Index(j);
            absorbed_relu_[j] = true;
        }
    }
    typename ops::Linear::template Run<T>* linear(std::size_t node) {
        return dynamic_cast<typename ops::Linear::template Run<T>*>(kernels_[node].get());
    }

    void check_input(const ConstView<T>& x, const SurfaceIds& surfaces, const char* what) const {
        moe::detail::check_rows(x, in_features_, spec_.file, what);
        moe::detail::require(!surfaces.given(), spec_.file, "::", what,
                             ": a graph model has no surfaces (tower trees)");
        moe::detail::require(x.cols() > 0, spec_.file, "::", what, ": the batch is empty");
    }
    void resolve_dims(Index n, std::vector<Dims>& dims) const {
        dims.resize(graph_.values.size());
        for (std::size_t v = 0; v < graph_.values.size(); ++v) dims[v] = resolve(graph_.values[v], n);
    }
    /// Points the input values at x's rows (x itself when it is the only input and contiguous).
    template <class Store>
    void set_inputs(const ConstView<T>& x, std::vector<const T*>& ptr, Store& store) const {
        const std::size_t inputs = graph_.spec.inputs.size();
        if (inputs == 1 && x.outerStride() == x.rows()) {
            ptr[0] = x.data();
            return;
        }
        Index row = 0;
        for (std::size_t k = 0; k < inputs; ++k) {
            const Index f = Index(graph_.spec.inputs[k].shape.per_sample());
            auto& buf = store[k];
            buf.resize(std::size_t(f * x.cols()));
            MatrixView<T>(buf.data(), f, x.cols()) = x.middleRows(row, f);
            ptr[k] = buf.data();
            row += f;
        }
    }
    const std::vector<In<T>>& inputs_of(std::size_t node, const std::vector<Dims>& dims,
                                        const std::vector<const T*>& ptr) {
        auto& in = in_scratch_;
        in.clear();
        for (std::size_t v : graph_.nodes[node].inputs) in.push_back({ptr[v], &dims[v]});
        return in;
    }
    Index rows_of(const FusedLinear<T>& g, const std::vector<Dims>& dims) const {
        const Dims& d = dims[g.input()];
        return numel(d) / d.back();
    }
    std::vector<T*>& values_out(const FusedLinear<T>& g, std::vector<std::vector<T>>& store) {
        member_ptr_.clear();
        for (std::size_t m : g.nodes()) member_ptr_.push_back(store[graph_.spec.inputs.size() + m].data());
        return member_ptr_;
    }
    /// The gradient each member's output gets: its own, or that of the ReLU that absorbed its backward.
    std::vector<const T*>& grads_out(const FusedLinear<T>& g) {
        member_grad_.clear();
        for (std::size_t m : g.nodes())
            member_grad_.push_back(
                grads_[graph_.spec.inputs.size() + (relu_of_[m] >= 0 ? std::size_t(relu_of_[m]) : m)].data());
        return member_grad_;
    }
    /// Per member: the output of the ReLU that absorbed its backward, or null.
    std::vector<const T*>& relu_outs(const FusedLinear<T>& g) {
        member_relu_.clear();
        for (std::size_t m : g.nodes())
            member_relu_.push_back(
                relu_of_[m] >= 0 ? values_[graph_.spec.inputs.size() + std::size_t(relu_of_[m])].data() : nullptr);
        return member_relu_;
    }
    T* grad_ptr(std::size_t v) { return grads_[v].empty() ? nullptr : grads_[v].data(); }
    const std::vector<ConstView<T>>& outputs(const std::vector<const T*>& ptr, std::vector<ConstView<T>>& out) const {
        for (std::size_t t = 0; t < tasks_.size(); ++t)
            new (&out[t]) ConstView<T>(ptr[graph_.outputs[t]], tasks_[t].outputs(), batch_);
        return out;
    }

    /// One block of predict on one thread: every value in s.values, then the heads.
    const std::vector<ConstView<T>>& infer_block(const ConstView<T>& x, InferenceScratch<T>& s) const {
        const Index n = x.cols();
        const std::size_t inputs = graph_.spec.inputs.size(), values = graph_.values.size();
        thread_local std::vector<Dims> dims;
        thread_local std::vector<const T*> ptr;
        thread_local std::vector<In<T>> in;
        thread_local std::vector<T*> member;
        resolve_dims(n, dims);
        ptr.assign(values, nullptr);
        if (s.values.size() < values) s.values.resize(values);
        std::vector<std::vector<T>>& store = s.values;
        set_inputs(x, ptr, store);
        for (std::size_t i = 0; i < kernels_.size(); ++i) {
            const std::size_t v = inputs + i;
            store[v].resize(std::size_t(numel(dims[v])));
            ptr[v] = store[v].data();
        }
        for (std::size_t i = 0; i < kernels_.size(); ++i) {
            if (!reaches_output_[i]) continue;
            const std::size_t v = inputs + i;
            if (group_of_[i] >= 0) {
                const FusedLinear<T>& g = groups_[std::size_t(group_of_[i])];
                if (g.nodes().front() != i) continue;
                member.clear();
                for (std::size_t m : g.nodes()) member.push_back(store[inputs + m].data());
                thread_local Matrix<T> w;
                thread_local std::vector<T> y;
                g.infer(ptr[g.input()], rows_of(g, dims), member, w, y);
                continue;
            }
            in.clear();
            for (std::size_t u : graph_.nodes[i].inputs) in.push_back({ptr[u], &dims[u]});
            kernels_[i]->infer(in, store[v].data(), dims[v]);
        }
        // The heads, into the block's prediction buffers.
        if (s.preds.size() != tasks_.size()) s.preds.resize(tasks_.size());
        if (s.out.size() != tasks_.size()) s.out.resize(tasks_.size());
        for (std::size_t t = 0; t < tasks_.size(); ++t) {
            const TaskSpec& task = tasks_[t];
            const ConstView<T> z(ptr[graph_.outputs[t]], task.outputs(), n);
            auto& p = s.preds[t].resize(task.outputs(), n);
            switch (task.kind) {
                case TaskKind::binary:
                    p = z.unaryExpr([](T v) { return moe::detail::stable_sigmoid(v); });
                    break;
                case TaskKind::regression:
                    if (task.relu_output)
                        p = z.cwiseMax(T(0));
                    else
                        p = z;
                    break;
                case TaskKind::multiclass:
                    for (Index b = 0; b < n; ++b) {
                        const T m = z.col(b).maxCoeff();
                        p.col(b) = (z.col(b).array() - m).exp().matrix();
                        p.col(b) /= p.col(b).sum();
                    }
                    break;
            }
            s.out[t] = p;
        }
        return s.out;
    }

    void copy_state(const GraphModel& o) {
        training_ = o.training_;
        for (std::size_t n = 0; n < kernels_.size(); ++n) {
            kernels_[n]->set_training(o.training_);
            std::vector<std::pair<std::string, BatchNorm1d<T>*>> mine, theirs;
            kernels_[n]->batchnorms(mine);
            o.kernels_[n]->batchnorms(theirs);
            for (std::size_t i = 0; i < mine.size() && i < theirs.size(); ++i) {
                mine[i].second->running_mean() = theirs[i].second->running_mean();
                mine[i].second->running_var() = theirs[i].second->running_var();
                mine[i].second->num_batches_tracked() = theirs[i].second->num_batches_tracked();
            }
        }
    }

    GraphModelSpec spec_;
    CheckedGraph graph_;
    std::vector<std::unique_ptr<Kernel<T>>> kernels_;
    std::vector<FusedLinear<T>> groups_;
    std::vector<Index> group_of_;      // per node: its fused group, or -1
    std::vector<Index> relu_of_;       // per fused member: the ReLU node that absorbed its backward, or -1
    std::vector<bool> absorbed_relu_;  // per node: a ReLU whose backward its producer's group does
    std::vector<bool> reaches_output_;
    std::vector<TaskSpec> tasks_;
    Index in_features_ = 0;
    bool training_ = true;
    // The last forward's batch: values, gradients, dims, pointers (inputs may alias x).
    Index batch_ = 0;
    std::vector<std::vector<T>> values_, grads_;
    std::vector<const T*> value_ptr_;
    std::vector<Dims> dims_;
    std::vector<std::vector<T*>> din_;
    std::vector<char> written_;  // per value: its gradient holds a contribution of this backward
    std::vector<In<T>> in_scratch_;
    std::vector<T*> member_ptr_;
    std::vector<const T*> member_grad_, member_relu_;
    std::vector<ConstView<T>> out_;
    Buffer<T> dx_buf_;
    MatrixView<T> dx_{nullptr, 0, 0};
};

}  // namespace moe::graph
