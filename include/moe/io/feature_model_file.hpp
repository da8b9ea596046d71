#pragma once
// Model files of a FeatureModel: the net's model file (io/model_file.hpp) plus the input block.
//
//   __metadata__: as the net's file, and "features": "<the FeatureSpec as JSON, vocabularies included>",
//                 ["table_optimizer": "sparse_adam" | "sparse_adagrad"],
//                 ["calibration": the model's Calibration as JSON (io/calibration_json.hpp), when it has one]
//   tensors:      the net's tensors under their usual names (and its Adam state), each table as
//                 "tables.<table>.weight" (rows x dim, PyTorch's nn.EmbeddingBag weight), and with the
//                 table optimizer "optimizer.tables.<table>.<state>" (exp_avg, exp_avg_sq or sum:
//                 rows x dim, or rows for row-wise Adagrad) and "optimizer.tables.<table>.step" (I64, []).
//                 With attention features, their MLPs as "attention.<feature>.mlp.<i>.weight" / ".bias".
//
// Loading checks everything (the net's tensors as load() does, every table's shape, dtype and finite
// values, the optimizer states' shapes) before anything is copied, so a bad file changes neither the
// optimizers given to load into nor anything else.
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "moe/features/feature_model.hpp"
#include "moe/features/table_optimizer.hpp"
#include "moe/io/calibration_json.hpp"
#include "moe/io/model_file.hpp"

namespace moe {

namespace detail {
/// The shape a table-shaped state matrix (r x rows, column-major) has in a file: rows x r, or rows
/// when r is 1 (row-wise state).
template <class T>
std::vector<std::int64_t> table_state_shape(const Matrix<T>& m) {
    return m.rows() == 1 ? std::vector<std::int64_t>{m.cols()} : std::vector<std::int64_t>{m.cols(), m.rows()};
}
}  // namespace detail

/// Saves a FeatureModel (and, when given, the Adam state of its net and the state of its table
/// optimizer) to path, atomically. Throws io_error naming the file.
template <class Net, class Opt = SparseAdam<typename Net::Scalar>>
void save(const FeatureModel<Net>& model, const std::string& path, const Adam<typename Net::Scalar>* adam = nullptr,
          const TableOptimizer<typename Net::Scalar, Opt>* tables = nullptr) {
    using T = typename Net::Scalar;
    SafetensorsFile file = detail::model_file_contents(model.net(), adam);
    const FeatureInput<T>& in = model.input();
    file.metadata["features"] = detail::spec_to_json(in.spec()).dump();
    if (!model.calibration().empty()) file.metadata["calibration"] = detail::calibration_to_json(model.calibration()).dump();
    detail::require(!tables || tables->tables() == in.tables(), "moe::save: the table optimizer has ",
                    tables ? tables->tables() : 0, " tables, the model ", in.tables());
    for (Index t = 0; t < in.tables(); ++t) {
        const std::string& name = in.spec().tables[std::size_t(t)].name;
        file.tensors["tables." + name + ".weight"] = detail::make_tensor<T>({in.table(t).cols(), in.table(t).rows()}, in.table(t).data());
        if (!tables) continue;
        const Opt& opt = tables->table_optimizer(t);
        opt.for_each_state([&](const char* state, const Matrix<T>& m) {
            file.tensors["optimizer.tables." + name + "." + state] = detail::make_tensor<T>(detail::table_state_shape(m), m.data());
        });
        file.tensors["optimizer.tables." + name + ".step"] = detail::make_count(opt.steps());
    }
    if (tables) file.metadata["table_optimizer"] = Opt::kind;
    for (const auto& [name, slot] : detail::model_tensors(const_cast<FeatureInput<T>&>(in).attention_module()))
        file.tensors["attention." + name] = detail::make_tensor<T>(slot.shape, slot.data);
    write_safetensors(path, file);
}

/// Loads a FeatureModel saved by save(); with adam and tables, also the optimizers' states (the file
/// must hold them, the table optimizer of the same kind). The model comes back in evaluation mode.
template <class Net, class Opt = SparseAdam<typename Net::Scalar>>
FeatureModel<Net> load_feature_model(const std::string& path, const LoadOptions& options = {},
                                     Adam<typename Net::Scalar>* adam = nullptr,
                                     TableOptimizer<typename Net::Scalar, Opt>* tables = nullptr) {
    using T = typename Net::Scalar;
    using detail::concat;
    const SafetensorsFile file = read_safetensors(path);
    const auto features_meta = file.metadata.find("features");
    if (features_meta == file.metadata.end())
        throw io_error(concat(path, ": the metadata has no 'features' (a model without ID features: load it with moe::load)"));
    const typename Net::Spec spec = detail::read_model_metadata<Net>(file, path, options);
    FeatureSpec features;
    try {
        detail::read_field(nlohmann::json::parse(features_meta->second), "features", features);
    } catch (const nlohmann::json::exception& e) {
        throw io_error(concat(path, ": features is not valid JSON (", e.what(), ")"));
    } catch (const config_error& e) {
        throw io_error(concat(path, ": ", e.what()));
    }
    // The tables' size against the file, before anything is allocated (as build_for_file does for the net).
    double table_values = 0, file_values = 0;
    for (const auto& t : features.tables) table_values += std::fabs(double(t.rows)) * std::fabs(double(t.dim));
    for (const auto& [name, t] : file.tensors) {
        (void)name;
        file_values += double(t.bytes.size() / dtype_size(t.dtype));
    }
    if (!(table_values + detail::model_values(spec) <= 2.0 * file_values + 1e6))
        throw io_error(concat(path, ": the features and config describe ", table_values, " table values and ",
                              detail::model_values(spec), " model values, but the file's tensors hold ", file_values));
    std::optional<FeatureModel<Net>> built;
    try {
        built.emplace(features, spec);
    } catch (const std::invalid_argument& e) {  // config_error, shape_error
        throw io_error(concat(path, ": the features or config do not describe a valid model: ", e.what()));
    }
    FeatureModel<Net>& model = *built;
    FeatureInput<T>& in = model.input();
    Calibration calibration;
    if (const auto cal = file.metadata.find("calibration"); cal != file.metadata.end()) {
        try {
            calibration = detail::calibration_from_json(nlohmann::json::parse(cal->second), model.surfaces(), model.tasks());
        } catch (const nlohmann::json::exception& e) {
            throw io_error(concat(path, ": calibration is not valid JSON (", e.what(), ")"));
        } catch (const std::invalid_argument& e) {  // config_error, shape_error
            throw io_error(concat(path, ": ", e.what()));
        }
    }

    // Tables and their optimizer state: checked before the net's tensors are loaded (which may set adam).
    if (tables) {
        const auto kind = file.metadata.find("table_optimizer");
        if (kind == file.metadata.end())
            throw io_error(concat(path, ": holds no table optimizer state (saved without one), but a table optimizer was given"));
        if (kind->second != Opt::kind)
            throw io_error(concat(path, ": holds the state of a ", kind->second, " table optimizer, loading into a ", Opt::kind));
        if (tables->tables() != in.tables())
            throw io_error(concat(path, ": the model has ", in.tables(), " tables, the table optimizer given ", tables->tables()));
    }
    auto find = [&](const std::string& name, const std::vector<std::int64_t>& shape, bool is_count) -> const Tensor& {
        const auto it = file.tensors.find(name);
        if (it == file.tensors.end()) throw io_error(concat(path, ": tensor '", name, "' is missing"));
        const Tensor& t = it->second;
        if (t.shape != shape)
            throw io_error(concat(path, ": tensor '", name, "' has shape ", detail::shape_string(t.shape), ", the spec needs ",
                                  detail::shape_string(shape)));
        if (is_count != (t.dtype == DType::i64))
            throw io_error(concat(path, ": tensor '", name, "' has dtype ", to_string(t.dtype)));
        if (!is_count && options.check_finite)
            for (T v : t.template values<T>())
                if (!std::isfinite(double(v))) throw io_error(concat(path, ": tensor '", name, "' holds a non-finite value (", v, ")"));
        return t;
    };
    std::vector<std::vector<Matrix<T>>> states(std::size_t(in.tables()));
    std::vector<long long> steps(std::size_t(in.tables()), 0);
    for (Index t = 0; t < in.tables(); ++t) {
        const std::string& name = in.spec().tables[std::size_t(t)].name;
        find("tables." + name + ".weight", {in.table(t).cols(), in.table(t).rows()}, false);
        if (!tables) continue;
        tables->table_optimizer(t).for_each_state([&](const char* state, const Matrix<T>& m) {
            const auto values = find("optimizer.tables." + name + "." + state, detail::table_state_shape(m), false).template values<T>();
            states[std::size_t(t)].push_back(Eigen::Map<const Matrix<T>>(values.data(), m.rows(), m.cols()));
        });
        std::int64_t step = 0;
        std::memcpy(&step, find("optimizer.tables." + name + ".step", {}, true).bytes.data(), 8);
        if (step < 0) throw io_error(concat(path, ": tensor 'optimizer.tables.", name, ".step' is ", step));
        steps[std::size_t(t)] = step;
    }
    // The attention features' MLPs.
    const auto attention_slots = detail::model_tensors(in.attention_module());
    std::vector<std::vector<T>> attention_values;
    for (const auto& [name, slot] : attention_slots)
        attention_values.push_back(find("attention." + name, slot.shape, false).template values<T>());
    // The net: every other tensor, checked as load() does (strict: no tensor may be left over).
    std::map<std::string, const Tensor*> net_tensors;
    for (const auto& [name, t] : file.tensors)
        if (name.rfind("tables.", 0) != 0 && name.rfind("optimizer.tables.", 0) != 0 && name.rfind("attention.", 0) != 0)
            net_tensors[name] = &t;
    if (options.strict)
        for (const auto& [name, t] : file.tensors) {
            (void)t;
            if (name.rfind("attention.", 0) == 0) {
                if (!attention_slots.count(name.substr(10)))
                    throw io_error(concat(path, ": tensor '", name,
                                          "' is not a parameter of the features' attention (LoadOptions::strict = false ignores it)"));
                continue;
            }
            if (name.rfind("tables.", 0) != 0) continue;
            bool known = false;  // "tables.<a table of the features>.weight"
            for (const TableSpec& table : in.spec().tables) known = known || name == "tables." + table.name + ".weight";
            if (!known)
                throw io_error(concat(path, ": tensor '", name, "' is not a table of the features (LoadOptions::strict = false ignores it)"));
        }
    detail::load_tensors(model.net(), net_tensors, path, detail::model_kind<Net>::value, options, adam);
    // Everything checked: copy the tables, the attention parameters and the optimizers' state.
    std::size_t a = 0;
    for (const auto& [name, slot] : attention_slots) {
        (void)name;
        std::copy(attention_values[a].begin(), attention_values[a].end(), slot.data);
        ++a;
    }
    for (Index t = 0; t < in.tables(); ++t) {
        const auto values = file.tensors.at("tables." + in.spec().tables[std::size_t(t)].name + ".weight").template values<T>();
        std::copy(values.begin(), values.end(), in.table(t).data());
        if (tables) tables->table_optimizer(t).set_state(states[std::size_t(t)], steps[std::size_t(t)]);
    }
    model.set_calibration(std::move(calibration));
    model.eval();
    return std::move(*built);
}

}  // namespace moe
