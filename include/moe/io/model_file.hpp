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
// metadata (format, version, kind, dtype, the config read strictly by io/spec_json.hpp), refuses a
// config that needs more values than the file holds, builds the model and checks every tensor
// against it before copying anything (io/state_dict.hpp): missing, extra (unless non-strict), wrong
// shape, wrong dtype (unless converting), and non-finite values (unless not asked) all give
// io_error naming the file and the tensor.
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
#include "moe/io/spec_json.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/models/mmoe.hpp"
#include "moe/models/ple.hpp"
#include "moe/models/shared_bottom.hpp"
#include "moe/models/sparse_mmoe.hpp"
#include "moe/models/sparse_moe.hpp"
#include "moe/optim/adam.hpp"

namespace moe {

constexpr int kModelFileVersion = 1;

// ---- how many values a spec's model holds ---------------------------------------------------------
namespace detail {
// Exactly the element count of every tensor the model writes (parameters, BatchNorm statistics and
// counters), computed from the spec before the model is built: the loader refuses a config that
// needs more values than the file's tensors hold, so a lying config cannot make it allocate. Sizes
// enter as magnitudes, in double: a config mixing huge and negative sizes cannot cancel out, and
// nothing overflows. A test compares these counts with the built models of every kind.
inline double size_of(Index v) { return std::fabs(double(v)); }

/// An MLP in -> hidden... -> out; BatchNorm after each hidden layer adds weight, bias, running mean
/// and variance (4 h) and num_batches_tracked (1).
inline double mlp_values(double in, const std::vector<Index>& hidden, double out, bool batchnorm) {
    double n = 0;
    for (Index hv : hidden) {
        const double h = size_of(hv);
        n += in * h + h + (batchnorm ? 4.0 * h + 1.0 : 0.0);
        in = h;
    }
    return n + in * out + out;
}
/// The towers of every task (a tower per task and surface in a tower tree).
inline double towers_values(double in, const MultiTaskSpec& s) {
    double n = 0;
    for (const auto& t : s.tasks)
        n += mlp_values(in, s.tower_hidden, t.kind == TaskKind::multiclass ? size_of(t.classes) : 1.0, s.batchnorm);
    return n * size_of(s.surfaces);
}
inline double model_values(const MMoESpec& s) {
    const double gates = s.shared_gate ? 1.0 : double(s.tasks.size()), experts = size_of(s.experts), in = size_of(s.input);
    double gate = mlp_values(in, s.gate_hidden, experts, false);
    if (s.gate == GateKind::dselect_k) {  // z: Linear(in, k m), w: Linear(in, k)
        const double k = size_of(s.dselect_k), m = std::ceil(std::log2(std::max(2.0, experts)));
        gate = (in + 1) * k * m + (in + 1) * k;
    }
    return experts * mlp_values(in, s.expert_hidden, size_of(s.expert_dim), s.batchnorm) + gates * gate +
           towers_values(size_of(s.expert_dim), s);
}
inline double model_values(const SharedBottomSpec& s) {
    return mlp_values(size_of(s.input), s.bottom_hidden, size_of(s.bottom_dim), s.batchnorm) +
           towers_values(size_of(s.bottom_dim), s);
}
inline double model_values(const PLESpec& s) {
    double n = 0, in = size_of(s.input);
    const double tasks = double(s.tasks.size());
    for (std::size_t l = 0; l < s.levels.size(); ++l) {
        const auto& level = s.levels[l];
        const double own = size_of(level.task_experts), shared = size_of(level.shared_experts);
        const double experts = tasks * own + shared;
        n += experts * mlp_values(in, level.expert_hidden, size_of(level.expert_dim), s.batchnorm);
        n += tasks * (in * (own + shared) + own + shared);             // task gates: Linear(in, P + S)
        if (l + 1 < s.levels.size()) n += in * experts + experts;     // shared gate: Linear(in, E), not on the last level
        in = size_of(level.expert_dim);
    }
    return n + towers_values(in, s);
}
/// One feed-forward d -> ffn -> d: an MLP with biases or a SwiGLU (three weights, no biases).
inline double ffn_values(ExpertKind kind, double d, Index ffn) {
    return kind == ExpertKind::swiglu ? 3.0 * d * size_of(ffn) : mlp_values(d, {ffn}, d, false);
}
inline double model_values(const SparseMoESpec& s) {
    const double e = size_of(s.experts), d = size_of(s.dim);
    return e * d + (s.router_bias ? e : 0.0) + (s.noisy ? e * d : 0.0) + e * ffn_values(s.expert, d, s.ffn);
}
inline double model_values(const MoETransformerLayerSpec& s) {
    const double d = size_of(s.dim), e = size_of(s.experts);
    const double ffn = e == 0 ? ffn_values(s.expert, d, s.ffn)
                              : e * d + (s.moe.router_bias ? e : 0.0) + (s.moe.noisy ? e * d : 0.0) + e * ffn_values(s.expert, d, s.ffn) +
                                    (s.shared_experts ? ffn_values(s.expert, d, s.shared_experts * s.ffn) : 0.0);
    return 4.0 * d + 4.0 * d * d + 4.0 * d + ffn;  // two norms, attention, feed-forward
}
inline double model_values(const MoETransformerSpec& s) {
    const double d = size_of(s.layer.dim);
    return (size_of(s.vocab) + size_of(s.max_positions)) * d + size_of(s.layers) * model_values(s.layer) + 2.0 * d +
           (s.tied_head ? 0.0 : size_of(s.vocab) * d);
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
template <class T> struct model_kind<MoETransformerLayer<T>> { static constexpr const char* value = "moe_transformer_layer"; };
template <class T> struct model_kind<MoETransformer<T>> { static constexpr const char* value = "moe_transformer"; };

}  // namespace detail

namespace detail {
/// The tensors and metadata of a model file for model (and adam's state when given).
template <class M>
SafetensorsFile model_file_contents(const Model<M>& model, const Adam<typename M::Scalar>* adam) {
    using T = typename M::Scalar;
    SafetensorsFile file;
    // model_tensors lists where the values live through the model's (non-const) visitors; nothing is
    // written through the pointers here.
    const auto slots = detail::model_tensors(const_cast<Model<M>&>(model));
    for (const auto& [name, s] : slots)
        file.tensors[name] = s.count ? detail::make_count(*s.count) : detail::make_tensor<T>(s.shape, s.data);
    file.metadata["format"] = "moe-model";
    file.metadata["version"] = std::to_string(kModelFileVersion);
    file.metadata["kind"] = detail::model_kind<M>::value;
    file.metadata["dtype"] = detail::dtype_name<T>();
    file.metadata["config"] = spec_to_json(model.spec()).dump();
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
    return file;
}
}  // namespace detail

/// Saves model (and adam's state when given) to path, atomically. Throws io_error naming the file.
template <class M>
void save(const Model<M>& model, const std::string& path, const Adam<typename M::Scalar>* adam = nullptr) {
    write_safetensors(path, detail::model_file_contents(model, adam));
}

namespace detail {
/// Builds the model of `spec` for the file at path. Before anything is allocated, refuses a spec
/// that needs far more values than the file's tensors hold (more than twice as many, plus a million):
/// a lying config cannot make the loader allocate more than a small multiple of the file. A smaller
/// mismatch builds the model and fails on the first missing tensor, a more precise message.
template <class M>
Model<M> build_for_file(const typename M::Spec& spec, const SafetensorsFile& file, const std::string& path) {
    double file_values = 0;  // every tensor's shape was checked against its bytes when the file was read
    for (const auto& [name, t] : file.tensors) {
        (void)name;
        file_values += double(t.bytes.size() / dtype_size(t.dtype));
    }
    const double config_values = model_values(spec);
    if (!(config_values <= 2.0 * file_values + 1e6))
        throw io_error(concat(path, ": the config describes a model of ", config_values, " values, but the file's tensors hold ",
                              file_values));
    try {
        return Model<M>(spec);
    } catch (const std::invalid_argument& e) {  // config_error, shape_error
        throw io_error(concat(path, ": the config does not describe a valid model: ", e.what()));
    }
}

/// Checks a model file's metadata (format, version, kind, dtype against the tensors and T) and
/// returns the spec read from its config; io_error naming the file otherwise.
template <class M>
typename M::Spec read_model_metadata(const SafetensorsFile& file, const std::string& path, const LoadOptions& options) {
    using T = typename M::Scalar;
    auto meta = [&](const char* key) -> const std::string& {
        auto it = file.metadata.find(key);
        if (it == file.metadata.end())
            throw io_error(concat(path, ": the metadata has no '", key, "' (not a moe model file; a plain state_dict loads "
                                  "with moe::load_state_dict and a spec)"));
        return it->second;
    };
    if (meta("format") != "moe-model") throw io_error(concat(path, ": format is '", meta("format"), "', expected 'moe-model'"));
    if (meta("version") != std::to_string(kModelFileVersion))
        throw io_error(concat(path, ": format version ", meta("version"), ", this library reads version ", kModelFileVersion));
    if (meta("kind") != model_kind<M>::value)
        throw io_error(concat(path, ": holds a '", meta("kind"), "' model, loading a '", model_kind<M>::value, "'"));
    const std::string& dtype = meta("dtype");
    if (dtype != "float32" && dtype != "float64")
        throw io_error(concat(path, ": dtype is '", dtype, "', expected float32 or float64"));
    for (const auto& [name, t] : file.tensors)
        if (t.dtype != DType::i64 && to_string(t.dtype) != std::string(dtype == "float32" ? "F32" : "F64"))
            throw io_error(concat(path, ": the metadata says ", dtype, " but tensor '", name, "' is ", to_string(t.dtype)));
    if (dtype != dtype_name<T>() && !options.convert_dtype)
        throw io_error(concat(path, ": holds a ", dtype, " model, loading a ", dtype_name<T>(),
                              " one (LoadOptions::convert_dtype converts)"));
    typename M::Spec spec;
    try {
        spec_from_json(nlohmann::json::parse(meta("config")), spec);
    } catch (const nlohmann::json::exception& e) {
        throw io_error(concat(path, ": config is not valid JSON (", e.what(), ")"));
    } catch (const config_error& e) {
        throw io_error(concat(path, ": ", e.what()));
    }
    return spec;
}
}  // namespace detail

/// Loads a model saved by save() (or by tools/export_pytorch.py); with adam, also its state (the
/// file must then hold one). Everything is checked before anything is used (see the header comment
/// and docs/model_files.md). The model comes back in evaluation mode (BatchNorm uses its running
/// statistics, no dropout), ready to serve; call train() before training it further (fit does).
template <class M>
Model<M> load(const std::string& path, const LoadOptions& options = {}, Adam<typename M::Scalar>* adam = nullptr) {
    const SafetensorsFile file = read_safetensors(path);
    if (file.metadata.count("features"))
        throw io_error(detail::concat(path, ": holds a model with ID features (a FeatureModel); load it with "
                                      "moe::load_feature_model"));
    const typename M::Spec spec = detail::read_model_metadata<M>(file, path, options);
    Model<M> model = detail::build_for_file<M>(spec, file, path);
    detail::load_tensors(model, detail::renamed_tensors(file, path, options.renames), path, detail::model_kind<M>::value, options,
                         adam);
    model.eval();
    return model;
}

/// Loads a plain state_dict (a safetensors file of tensors, e.g. written from a PyTorch module with
/// safetensors.torch.save_file or tools/safetensors_io.py, metadata optional) into a model built from
/// `spec`, after the rename rules of options. Every check of load() applies (names, shapes, dtypes,
/// finite values, the file's size against the spec). The model comes back in evaluation mode.
/// docs/model_files.md walks through a tutorial-style PyTorch MMoE.
template <class M>
Model<M> load_state_dict(const std::string& path, const typename M::Spec& spec, const LoadOptions& options = {}) {
    const SafetensorsFile file = read_safetensors(path);
    Model<M> model = detail::build_for_file<M>(spec, file, path);
    detail::load_tensors(model, detail::renamed_tensors(file, path, options.renames), path, detail::model_kind<M>::value,
                         options, nullptr);
    model.eval();
    return model;
}

}  // namespace moe
