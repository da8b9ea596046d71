#pragma once
// Model files: one safetensors file per model, with the tensors named as the state_dict of the
// matching PyTorch module (tools/moe_torch.py), BatchNorm buffers included, the model's config as
// JSON in the metadata, and optionally the Adam state so that a resumed run continues bit for bit.
//
//   __metadata__: {"format": "moe-model", "version": "1", "kind": "mmoe" | "omoe" | "shared_bottom" |
//                  "ple" | "cgc" | "sparse_mmoe" | "sparse_moe", "dtype": "float32" | "float64",
//                  "config": "<the spec as JSON>", ["optimizer": "<Adam options as JSON>"]}
//   tensors:      every parameter ("experts.0.0.weight", ...), BatchNorm "....running_mean",
//                 "....running_var", "....num_batches_tracked" (I64, shape []), and with the optimizer
//                 "optimizer.exp_avg.<param>", "optimizer.exp_avg_sq.<param>", "optimizer.step" (I64, []).
//
// Saving is atomic (write_safetensors). Loading validates the file (read_safetensors), then the
// metadata, builds the model from the config and checks every tensor against it before copying
// anything: missing, extra (unless non-strict), wrong shape, wrong dtype (unless converting), and
// non-finite values (unless not asked) all give io_error naming the file and the tensor.
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "moe/core/model.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/models/mmoe.hpp"
#include "moe/models/ple.hpp"
#include "moe/models/shared_bottom.hpp"
#include "moe/models/sparse_mmoe.hpp"
#include "moe/models/sparse_moe.hpp"
#include "moe/optim/adam.hpp"

namespace moe {

constexpr int kModelFileVersion = 1;

/// How load() treats a file.
struct LoadOptions {
    bool strict = true;          ///< a tensor the model does not have is an error (false: ignored)
    bool convert_dtype = false;  ///< accept float32 tensors for a float64 model and the other way round
    bool check_finite = true;    ///< NaN or infinite values are an error
};

// ---- the spec of each model kind as JSON ----------------------------------------------------------
namespace detail {
using json = nlohmann::json;

inline json task_json(const TaskSpec& t) {
    return {{"name", t.name}, {"kind", to_string(t.kind)}, {"classes", t.classes}, {"relu_output", t.relu_output}};
}
inline TaskSpec task_from_json(const json& j) {
    TaskSpec t;
    t.name = j.at("name").get<std::string>();
    const std::string kind = j.at("kind").get<std::string>();
    if (kind == "binary") t.kind = TaskKind::binary;
    else if (kind == "regression") t.kind = TaskKind::regression;
    else if (kind == "multiclass") t.kind = TaskKind::multiclass;
    else throw config_error("unknown task kind '" + kind + "' (expected binary, regression or multiclass)");
    t.classes = j.at("classes").get<Index>();
    t.relu_output = j.at("relu_output").get<bool>();
    return t;
}
inline json tasks_json(const std::vector<TaskSpec>& ts) {
    json a = json::array();
    for (const auto& t : ts) a.push_back(task_json(t));
    return a;
}
inline std::vector<TaskSpec> tasks_from_json(const json& j) {
    std::vector<TaskSpec> ts;
    for (const auto& t : j) ts.push_back(task_from_json(t));
    return ts;
}

inline json spec_json(const MMoESpec& s) {
    return {{"input", s.input}, {"experts", s.experts}, {"expert_hidden", s.expert_hidden}, {"expert_dim", s.expert_dim},
            {"gate_hidden", s.gate_hidden}, {"tower_hidden", s.tower_hidden}, {"tasks", tasks_json(s.tasks)},
            {"activation", to_string(s.activation)}, {"batchnorm", s.batchnorm}, {"expert_dropout", s.expert_dropout},
            {"tower_dropout", s.tower_dropout}, {"expert_output_activation", s.expert_output_activation},
            {"shared_gate", s.shared_gate}};
}
inline void spec_from_json(const json& j, MMoESpec& s) {
    s.input = j.at("input").get<Index>();
    s.experts = j.at("experts").get<Index>();
    s.expert_hidden = j.at("expert_hidden").get<std::vector<Index>>();
    s.expert_dim = j.at("expert_dim").get<Index>();
    s.gate_hidden = j.at("gate_hidden").get<std::vector<Index>>();
    s.tower_hidden = j.at("tower_hidden").get<std::vector<Index>>();
    s.tasks = tasks_from_json(j.at("tasks"));
    s.activation = activation_from_string(j.at("activation").get<std::string>());
    s.batchnorm = j.at("batchnorm").get<bool>();
    s.expert_dropout = j.at("expert_dropout").get<double>();
    s.tower_dropout = j.at("tower_dropout").get<double>();
    s.expert_output_activation = j.at("expert_output_activation").get<bool>();
    s.shared_gate = j.at("shared_gate").get<bool>();
}
inline json spec_json(const SparseMMoESpec& s) {
    json j = spec_json(static_cast<const MMoESpec&>(s));
    j["k"] = s.k;
    j["renormalize"] = s.renormalize;
    return j;
}
inline void spec_from_json(const json& j, SparseMMoESpec& s) {
    spec_from_json(j, static_cast<MMoESpec&>(s));
    s.k = j.at("k").get<Index>();
    s.renormalize = j.at("renormalize").get<bool>();
}
inline json spec_json(const SharedBottomSpec& s) {
    return {{"input", s.input}, {"bottom_hidden", s.bottom_hidden}, {"bottom_dim", s.bottom_dim},
            {"tower_hidden", s.tower_hidden}, {"tasks", tasks_json(s.tasks)}, {"activation", to_string(s.activation)},
            {"batchnorm", s.batchnorm}, {"bottom_dropout", s.bottom_dropout}, {"tower_dropout", s.tower_dropout},
            {"bottom_output_activation", s.bottom_output_activation}};
}
inline void spec_from_json(const json& j, SharedBottomSpec& s) {
    s.input = j.at("input").get<Index>();
    s.bottom_hidden = j.at("bottom_hidden").get<std::vector<Index>>();
    s.bottom_dim = j.at("bottom_dim").get<Index>();
    s.tower_hidden = j.at("tower_hidden").get<std::vector<Index>>();
    s.tasks = tasks_from_json(j.at("tasks"));
    s.activation = activation_from_string(j.at("activation").get<std::string>());
    s.batchnorm = j.at("batchnorm").get<bool>();
    s.bottom_dropout = j.at("bottom_dropout").get<double>();
    s.tower_dropout = j.at("tower_dropout").get<double>();
    s.bottom_output_activation = j.at("bottom_output_activation").get<bool>();
}
inline json spec_json(const PLESpec& s) {
    json levels = json::array();
    for (const auto& l : s.levels)
        levels.push_back({{"shared_experts", l.shared_experts}, {"task_experts", l.task_experts},
                          {"expert_hidden", l.expert_hidden}, {"expert_dim", l.expert_dim}});
    return {{"input", s.input}, {"levels", levels}, {"tower_hidden", s.tower_hidden}, {"tasks", tasks_json(s.tasks)},
            {"activation", to_string(s.activation)}, {"batchnorm", s.batchnorm}, {"expert_dropout", s.expert_dropout},
            {"tower_dropout", s.tower_dropout}, {"expert_output_activation", s.expert_output_activation}};
}
inline void spec_from_json(const json& j, PLESpec& s) {
    s.input = j.at("input").get<Index>();
    for (const auto& l : j.at("levels"))
        s.levels.push_back(PLELevelSpec{l.at("shared_experts").get<Index>(), l.at("task_experts").get<Index>(),
                                        l.at("expert_hidden").get<std::vector<Index>>(), l.at("expert_dim").get<Index>()});
    s.tower_hidden = j.at("tower_hidden").get<std::vector<Index>>();
    s.tasks = tasks_from_json(j.at("tasks"));
    s.activation = activation_from_string(j.at("activation").get<std::string>());
    s.batchnorm = j.at("batchnorm").get<bool>();
    s.expert_dropout = j.at("expert_dropout").get<double>();
    s.tower_dropout = j.at("tower_dropout").get<double>();
    s.expert_output_activation = j.at("expert_output_activation").get<bool>();
}
inline json spec_json(const SparseMoESpec& s) {
    return {{"dim", s.dim}, {"ffn", s.ffn}, {"experts", s.experts}, {"k", s.k}, {"activation", to_string(s.activation)},
            {"renormalize", s.renormalize}, {"noisy", s.noisy}, {"router_bias", s.router_bias},
            {"capacity_factor", s.capacity_factor},
            {"dropped", s.dropped == DroppedTokens::zero ? "zero" : "passthrough"}, {"balance_coef", s.balance_coef},
            {"importance_coef", s.importance_coef}, {"load_coef", s.load_coef}, {"z_coef", s.z_coef},
            {"noise_seed", s.noise_seed}};
}
inline void spec_from_json(const json& j, SparseMoESpec& s) {
    s.dim = j.at("dim").get<Index>();
    s.ffn = j.at("ffn").get<Index>();
    s.experts = j.at("experts").get<Index>();
    s.k = j.at("k").get<Index>();
    s.activation = activation_from_string(j.at("activation").get<std::string>());
    s.renormalize = j.at("renormalize").get<bool>();
    s.noisy = j.at("noisy").get<bool>();
    s.router_bias = j.at("router_bias").get<bool>();
    s.capacity_factor = j.at("capacity_factor").get<double>();
    const std::string dropped = j.at("dropped").get<std::string>();
    if (dropped != "zero" && dropped != "passthrough")
        throw config_error("unknown dropped-token policy '" + dropped + "' (expected zero or passthrough)");
    s.dropped = dropped == "zero" ? DroppedTokens::zero : DroppedTokens::passthrough;
    s.balance_coef = j.at("balance_coef").get<double>();
    s.importance_coef = j.at("importance_coef").get<double>();
    s.load_coef = j.at("load_coef").get<double>();
    s.z_coef = j.at("z_coef").get<double>();
    s.noise_seed = j.at("noise_seed").get<std::uint64_t>();
}

/// Parameters of an MLP with these sizes (and BatchNorm on the hidden layers), in double so that a
/// lying config cannot overflow it.
inline double mlp_parameters(double in, const std::vector<Index>& hidden, double out, bool batchnorm) {
    double n = 0;
    for (Index h : hidden) n += in * double(h) + double(h) + (batchnorm ? 4.0 * double(h) : 0.0), in = double(h);
    return n + in * out + out;
}
inline double towers_parameters(double in, const std::vector<Index>& hidden, const std::vector<TaskSpec>& tasks, bool bn) {
    double n = 0;
    for (const auto& t : tasks) n += mlp_parameters(in, hidden, double(std::max<Index>(t.classes, 1)), bn);
    return n;
}
/// About how many values (parameters and BatchNorm statistics) a spec's model holds: checked against
/// the file's size before the model is built, so that a lying config cannot make it allocate more
/// than the file could fill.
inline double model_values(const MMoESpec& s) {
    const double gates = s.shared_gate ? 1.0 : double(s.tasks.size());
    return double(s.experts) * mlp_parameters(double(s.input), s.expert_hidden, double(s.expert_dim), s.batchnorm) +
           gates * mlp_parameters(double(s.input), s.gate_hidden, double(s.experts), false) +
           towers_parameters(double(s.expert_dim), s.tower_hidden, s.tasks, s.batchnorm);
}
inline double model_values(const SharedBottomSpec& s) {
    return mlp_parameters(double(s.input), s.bottom_hidden, double(s.bottom_dim), s.batchnorm) +
           towers_parameters(double(s.bottom_dim), s.tower_hidden, s.tasks, s.batchnorm);
}
inline double model_values(const PLESpec& s) {
    double n = 0, in = double(s.input);
    const double tasks = double(s.tasks.size());
    for (const auto& l : s.levels) {
        const double experts = tasks * double(l.task_experts) + double(l.shared_experts);
        n += experts * mlp_parameters(in, l.expert_hidden, double(l.expert_dim), s.batchnorm);
        n += tasks * (in + 1) * double(l.task_experts + l.shared_experts) + (in + 1) * experts + 1;  // gates
        in = double(l.expert_dim);
    }
    return n + towers_parameters(in, s.tower_hidden, s.tasks, s.batchnorm);
}
inline double model_values(const SparseMoESpec& s) {
    return double(s.experts) * (2.0 * double(s.dim) + 1.0) + double(s.experts) * mlp_parameters(double(s.dim), {s.ffn}, double(s.dim), false);
}

/// The file's "kind" of each model class.
template <class M> struct model_kind;
template <class T> struct model_kind<MMoE<T>> { static constexpr const char* value = "mmoe"; };
template <class T> struct model_kind<OMoE<T>> { static constexpr const char* value = "omoe"; };
template <class T> struct model_kind<SharedBottom<T>> { static constexpr const char* value = "shared_bottom"; };
template <class T> struct model_kind<PLE<T>> { static constexpr const char* value = "ple"; };
template <class T> struct model_kind<CGC<T>> { static constexpr const char* value = "cgc"; };
template <class T> struct model_kind<SparseMMoE<T>> { static constexpr const char* value = "sparse_mmoe"; };
template <class T> struct model_kind<SparseMoE<T>> { static constexpr const char* value = "sparse_moe"; };

struct IgnoreBatchNorm {
    template <class B>
    void operator()(const std::string&, B&) const {}
};
template <class M, class = void>
struct has_batchnorm : std::false_type {};
template <class M>
struct has_batchnorm<M, std::void_t<decltype(std::declval<M&>().for_each_batchnorm(std::string(), IgnoreBatchNorm{}))>>
    : std::true_type {};

template <class T>
constexpr DType dtype_of() {
    return std::is_same_v<T, float> ? DType::f32 : DType::f64;
}

/// Every tensor a model has, with its PyTorch shape, and where its values live. A bias and the
/// BatchNorm affine parameters are 1-D; every other parameter is a 2-D weight.
template <class T>
struct TensorSlot {
    std::vector<std::int64_t> shape;
    T* data = nullptr;              // float tensors: their values, row-major
    std::int64_t* count = nullptr;  // num_batches_tracked (one counter for all members of a grouped BatchNorm)
};

template <class M>
std::map<std::string, TensorSlot<typename M::Scalar>> model_tensors(Model<M>& model) {
    using T = typename M::Scalar;
    std::map<std::string, TensorSlot<T>> slots;
    std::set<std::string> vectors;  // names of 1-D parameters: the BatchNorm affine ones
    if constexpr (has_batchnorm<M>::value) {
        model.for_each_batchnorm("", [&](const std::string& name, BatchNorm1d<T>& bn) {
            const Index parts = bn.parts(), n = bn.running_mean().size() / parts;
            for (Index p = 0; p < parts; ++p) {
                std::string base = name;
                const auto slot = base.find("{}");
                if (slot != std::string::npos) base.replace(slot, 2, std::to_string(p));
                vectors.insert(join_name(base, "weight"));
                vectors.insert(join_name(base, "bias"));
                slots[join_name(base, "running_mean")] = {{n}, bn.running_mean().data() + p * n, nullptr};
                slots[join_name(base, "running_var")] = {{n}, bn.running_var().data() + p * n, nullptr};
                slots[join_name(base, "num_batches_tracked")] = {{}, nullptr, &bn.num_batches_tracked()};
            }
        });
    }
    auto& store = model.params();
    for (const auto& e : store.entries()) {
        const bool vector = vectors.count(e.name) || (e.cols == 1 && e.name.size() >= 5 &&
                                                      e.name.compare(e.name.size() - 5, 5, ".bias") == 0) ||
                            e.name == "bias";
        TensorSlot<T> s;
        s.shape = vector ? std::vector<std::int64_t>{e.rows} : std::vector<std::int64_t>{e.rows, e.cols};
        s.data = store.values().data() + e.offset;
        slots[e.name] = s;
    }
    return slots;
}

template <class T>
Tensor make_tensor(const std::vector<std::int64_t>& shape, const T* data) {
    Tensor t;
    t.dtype = dtype_of<T>();
    t.shape = shape;
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    t.bytes.resize(n * sizeof(T));
    std::memcpy(t.bytes.data(), data, t.bytes.size());
    return t;
}
inline Tensor make_count(std::int64_t v) {
    Tensor t;
    t.dtype = DType::i64;
    t.bytes.resize(8);
    std::memcpy(t.bytes.data(), &v, 8);
    return t;
}
inline std::string shape_string(const std::vector<std::int64_t>& s) {
    std::string out = "[";
    for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}
}  // namespace detail

/// Saves model (and adam's state when given) to path, atomically. Throws io_error naming the file.
template <class M>
void save(Model<M>& model, const std::string& path, const Adam<typename M::Scalar>* adam = nullptr) {
    using T = typename M::Scalar;
    SafetensorsFile file;
    const auto slots = detail::model_tensors(model);
    for (const auto& [name, s] : slots)
        file.tensors[name] = s.count ? detail::make_count(*s.count) : detail::make_tensor<T>(s.shape, s.data);
    file.metadata["format"] = "moe-model";
    file.metadata["version"] = std::to_string(kModelFileVersion);
    file.metadata["kind"] = detail::model_kind<M>::value;
    file.metadata["dtype"] = std::is_same_v<T, float> ? "float32" : "float64";
    file.metadata["config"] = detail::spec_json(model.spec()).dump();
    if (adam && adam->step_count() > 0) {
        const auto& store = model.params();
        for (const auto& e : store.entries()) {
            const auto& shape = slots.at(e.name).shape;
            file.tensors["optimizer.exp_avg." + e.name] = detail::make_tensor<T>(shape, adam->first_moment().data() + e.offset);
            file.tensors["optimizer.exp_avg_sq." + e.name] =
                detail::make_tensor<T>(shape, adam->second_moment().data() + e.offset);
        }
        file.tensors["optimizer.step"] = detail::make_count(adam->step_count());
        const AdamOptions& o = adam->options();
        file.metadata["optimizer"] = nlohmann::json{{"kind", "adam"}, {"lr", o.lr}, {"beta1", o.beta1}, {"beta2", o.beta2},
                                                    {"eps", o.eps}, {"weight_decay", o.weight_decay},
                                                    {"decoupled_weight_decay", o.decoupled_weight_decay}}.dump();
    }
    write_safetensors(path, file);
}

/// Loads a model saved by save() (or by tools/export_pytorch.py); with adam, also its state (the
/// file must then hold one). Everything is checked before anything is used; see the header comment.
template <class M>
Model<M> load(const std::string& path, const LoadOptions& options = {}, Adam<typename M::Scalar>* adam = nullptr) {
    using T = typename M::Scalar;
    using detail::concat;
    const SafetensorsFile file = read_safetensors(path);
    auto meta = [&](const char* key) -> const std::string& {
        auto it = file.metadata.find(key);
        if (it == file.metadata.end()) throw io_error(concat(path, ": the metadata has no '", key, "' (not a moe model file)"));
        return it->second;
    };
    if (meta("format") != "moe-model") throw io_error(concat(path, ": format is '", meta("format"), "', expected 'moe-model'"));
    if (meta("version") != std::to_string(kModelFileVersion))
        throw io_error(concat(path, ": format version ", meta("version"), ", this library reads version ", kModelFileVersion));
    if (meta("kind") != detail::model_kind<M>::value)
        throw io_error(concat(path, ": holds a '", meta("kind"), "' model, loading a '", detail::model_kind<M>::value, "'"));
    typename M::Spec spec;
    try {
        detail::spec_from_json(nlohmann::json::parse(meta("config")), spec);
    } catch (const nlohmann::json::exception& e) {
        throw io_error(concat(path, ": config is not a valid ", meta("kind"), " config (", e.what(), ")"));
    } catch (const config_error& e) {
        throw io_error(concat(path, ": config: ", e.what()));
    }
    // Before building anything: a config describing more values than the file holds is a lie.
    std::uint64_t data_bytes = 0;
    for (const auto& [name, t] : file.tensors) data_bytes += t.bytes.size();
    const double config_values = detail::model_values(spec);
    if (!(config_values <= double(data_bytes) / 4.0 + 64.0))
        throw io_error(concat(path, ": the config describes a model of about ", config_values, " values, but the file holds ",
                              data_bytes, " bytes of tensors"));
    std::optional<Model<M>> built;
    try {
        built.emplace(spec);
    } catch (const std::invalid_argument& e) {  // config_error, shape_error
        throw io_error(concat(path, ": the config does not describe a valid model: ", e.what()));
    }
    Model<M>& model = *built;
    auto slots = detail::model_tensors(model);

    std::set<std::string> expected;
    auto check = [&](const std::string& name, const std::vector<std::int64_t>& shape, bool is_count) {
        expected.insert(name);
        auto it = file.tensors.find(name);
        if (it == file.tensors.end()) throw io_error(concat(path, ": tensor '", name, "' is missing"));
        const Tensor& t = it->second;
        if (t.shape != shape)
            throw io_error(concat(path, ": tensor '", name, "' has shape ", detail::shape_string(t.shape), ", the config needs ",
                                  detail::shape_string(shape)));
        if (is_count) {
            if (t.dtype != DType::i64) throw io_error(concat(path, ": tensor '", name, "' has dtype ", to_string(t.dtype), ", expected I64"));
            return;
        }
        if (t.dtype == DType::i64 || (t.dtype != detail::dtype_of<T>() && !options.convert_dtype))
            throw io_error(concat(path, ": tensor '", name, "' has dtype ", to_string(t.dtype), ", expected ",
                                  to_string(detail::dtype_of<T>()),
                                  t.dtype == DType::i64 ? "" : " (LoadOptions::convert_dtype converts)"));
        if (options.check_finite)
            for (T v : t.template values<T>())
                if (!std::isfinite(static_cast<double>(v)))
                    throw io_error(concat(path, ": tensor '", name, "' holds a non-finite value (", v, ")"));
    };
    for (const auto& [name, s] : slots) check(name, s.shape, s.count != nullptr);
    const bool with_optimizer = adam != nullptr;
    if (with_optimizer) {
        if (!file.contains("optimizer.step"))
            throw io_error(concat(path, ": holds no optimizer state (saved without one), but an optimizer was given to load it into"));
        check("optimizer.step", {}, true);
        for (const auto& e : model.params().entries()) {
            check("optimizer.exp_avg." + e.name, slots.at(e.name).shape, false);
            check("optimizer.exp_avg_sq." + e.name, slots.at(e.name).shape, false);
        }
    }
    for (const auto& [name, t] : file.tensors) {
        (void)t;
        const bool optimizer_tensor = name.rfind("optimizer.", 0) == 0;
        if (!expected.count(name) && options.strict && !(optimizer_tensor && !with_optimizer))
            throw io_error(concat(path, ": tensor '", name, "' is not part of this ", meta("kind"),
                                  " (LoadOptions::strict = false ignores it)"));
    }

    // Everything checked: copy.
    for (auto& [name, s] : slots) {
        const Tensor& t = file.tensors.at(name);
        if (s.count) {
            std::int64_t v;
            std::memcpy(&v, t.bytes.data(), 8);
            *s.count = v;
            continue;
        }
        const auto values = t.template values<T>();
        std::copy(values.begin(), values.end(), s.data);
    }
    if (with_optimizer) {
        const Index n = model.params().size();
        Vector<T> m(n), v(n);
        for (const auto& e : model.params().entries()) {
            const auto a = file.at("optimizer.exp_avg." + e.name).template values<T>();
            const auto b = file.at("optimizer.exp_avg_sq." + e.name).template values<T>();
            std::copy(a.begin(), a.end(), m.data() + e.offset);
            std::copy(b.begin(), b.end(), v.data() + e.offset);
        }
        std::int64_t step;
        std::memcpy(&step, file.at("optimizer.step").bytes.data(), 8);
        adam->set_state(m, v, step);
    }
    return std::move(model);
}

}  // namespace moe
