// moe-graph: model graphs written in YAML, from the command line (CLI11).
//
//   moe-graph check model.yaml     every node's output shape, parameters and FLOPs per sample, the
//                                  totals, the fused Linear groups and warnings (nodes nothing
//                                  reads); exit 1 with the error (file:line:col, node, shapes).
//   moe-graph train model.yaml --data train.csv [--labels click,watch] --epochs N --out m.safetensors
//                                  fit() with a progress bar and per-epoch validation metrics (the
//                                  last --valid-fraction of the rows unless --valid names a file).
//   moe-graph predict m.safetensors --data test.csv [--out predictions.csv]
//   moe-graph export m.safetensors [--yaml model.yaml] [--state-dict weights.safetensors]
//                                  the YAML and a plain state_dict (PyTorch's names) for
//                                  tools/graph_torch.py or any PyTorch module with those names.
//   moe-graph toy-data --rows N --out train.csv
//                                  a seeded toy recommender data set for the corrected MMoE of the
//                                  README: features f0..f19, a click label and a watch time.
// Exit codes: 0 done, 1 a bad model, data file or option value (the message says which), 2 usage.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <moe/graph/graph_data.hpp>
#include <moe/graph/graph_model_file.hpp>
#include <moe/moe.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace moe::graph;

int check(const std::string& path) {
    const CheckedGraph g = check_graph(load_graph_yaml(path));
    std::printf("%-24s %-30s %-16s %12s %14s\n", "node", "type", "output", "params", "FLOPs/sample");
    for (const auto& in : g.spec.inputs)
        std::printf("%-24s %-30s %-16s %12s %14s\n", in.name.c_str(), "input", to_string(in.shape).c_str(), "", "");
    for (const auto& n : g.nodes)
        std::printf("%-24s %-30s %-16s %12.0f %14.0f\n", n.name.c_str(), n.type.c_str(), to_string(n.out).c_str(),
                    n.params, n.flops_per_sample);
    std::string outputs;
    for (std::size_t i = 0; i < g.outputs.size(); ++i)
        outputs += (i ? ", " : "") + g.spec.outputs[i].name + " " + to_string(g.values[g.outputs[i]]) + " " +
                   moe::to_string(g.spec.outputs[i].task.kind);
    std::printf("\n%s: %zu nodes, outputs %s; %.0f parameters, %.0f FLOPs per sample\n", path.c_str(), g.nodes.size(),
                outputs.c_str(), g.params(), g.flops_per_sample());
    const moe::Model<GraphModel<float>> model(graph_spec_from_file(path));
    for (const auto& group : model.fused_groups()) {
        std::string names;
        for (const auto& n : group) names += (names.empty() ? "" : ", ") + n;
        std::printf("fused into one GEMM: %s\n", names.c_str());
    }
    for (const auto& w : g.warnings) std::printf("warning: %s\n", w.c_str());
    return 0;
}

std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    std::string item;
    while (std::getline(in, item, ','))
        if (!item.empty()) out.push_back(item);
    return out;
}

struct TrainOptions {
    std::string yaml, data, valid, labels, out;
    double valid_fraction = 0.1, lr = 1e-3;
    int epochs = 5;
    moe::Index batch_size = 256;
    std::uint64_t seed = 1;
};

template <class T>
moe::MultiTaskData<T> take_columns(const moe::MultiTaskData<T>& d, moe::Index begin, moe::Index n) {
    moe::MultiTaskData<T> out;
    out.x = d.x.middleCols(begin, n);
    out.labels = d.labels.middleCols(begin, n);
    if (d.mask.size()) out.mask = d.mask.middleCols(begin, n);
    return out;
}

template <class T>
int train(const TrainOptions& o) {
    moe::Model<GraphModel<T>> model(graph_spec_from_file(o.yaml), o.seed);
    std::vector<std::string> labels = split_list(o.labels);
    if (labels.empty())
        for (const auto& t : model.tasks()) labels.push_back(t.name);
    moe::MultiTaskData<T> all = read_graph_csv<T>(o.data, model.graph(), labels), train_data, valid_data;
    const bool has_valid = !o.valid.empty() || o.valid_fraction > 0;
    if (!o.valid.empty()) {
        train_data = std::move(all);
        valid_data = read_graph_csv<T>(o.valid, model.graph(), labels);
    } else {
        const moe::Index n = all.size(), n_valid = moe::Index(std::floor(double(n) * o.valid_fraction));
        if (n - n_valid < 2)
            throw moe::config_error(moe::detail::concat(o.data, ": ", n, " rows leave too few to train on"));
        train_data = take_columns(all, 0, n - n_valid);
        if (n_valid > 0) valid_data = take_columns(all, n - n_valid, n_valid);
    }
    std::printf("%s: %lld training rows, %lld validation rows; %zu parameters\n", o.yaml.c_str(),
                static_cast<long long>(train_data.size()), static_cast<long long>(valid_data.size()),
                static_cast<std::size_t>(model.params().size()));
    moe::MultiTaskLoss<T> loss(model.tasks());
    moe::FitOptions fo;
    fo.epochs = o.epochs;
    fo.batch_size = o.batch_size;
    fo.lr = o.lr;
    fo.seed = o.seed;
    moe::fit(model, loss, train_data, has_valid && valid_data.size() ? &valid_data : nullptr, fo);
    moe::save(model, o.out);
    std::printf("saved %s\n", o.out.c_str());
    return 0;
}

/// The model file's dtype (float32 or float64) from its metadata.
std::string file_dtype(const std::string& path) {
    moe::SafetensorsFile f;
    try {
        f = moe::read_safetensors(path);
    } catch (const moe::io_error& e) {
        throw moe::io_error(std::string(e.what()) + " (expected a model file written by moe-graph train or moe::save)");
    }
    const auto it = f.metadata.find("dtype");
    return it == f.metadata.end() ? "float32" : it->second;
}

template <class T>
int predict(const std::string& model_path, const std::string& data, const std::string& out_path) {
    const auto model = moe::load<GraphModel<T>>(model_path);
    const moe::MultiTaskData<T> d = read_graph_csv<T>(data, model.graph(), {});
    const auto p = moe::predict_all(model, d.x);
    std::ofstream file;
    if (!out_path.empty()) {
        file.open(out_path);
        if (!file) throw moe::io_error(out_path + ": cannot write the predictions");
    }
    std::ostream& out = out_path.empty() ? std::cout : file;
    std::string header;
    for (const auto& t : model.tasks())
        if (t.outputs() == 1)
            header += (header.empty() ? "" : ",") + t.name;
        else
            for (moe::Index c = 0; c < t.outputs(); ++c)
                header += (header.empty() ? "" : ",") + t.name + "_" + std::to_string(c);
    out << header << "\n";
    out.precision(7);
    for (moe::Index j = 0; j < d.size(); ++j) {
        bool first = true;
        for (const auto& m : p)
            for (moe::Index r = 0; r < m.rows(); ++r) {
                out << (first ? "" : ",") << m(r, j);
                first = false;
            }
        out << "\n";
    }
    if (!out_path.empty())
        std::printf("wrote %lld predictions of %zu tasks to %s\n", static_cast<long long>(d.size()),
                    model.tasks().size(), out_path.c_str());
    return 0;
}

template <class T>
int export_model(const std::string& model_path, const std::string& yaml_path, const std::string& state_dict_path) {
    const auto model = moe::load<GraphModel<T>>(model_path);
    if (!yaml_path.empty()) {
        std::ofstream f(yaml_path, std::ios::binary);
        if (!(f << model.spec().yaml)) throw moe::io_error(yaml_path + ": cannot write the YAML");
        std::printf("wrote %s\n", yaml_path.c_str());
    }
    if (!state_dict_path.empty()) {
        moe::SafetensorsFile file = moe::read_safetensors(model_path);
        for (auto it = file.tensors.begin(); it != file.tensors.end();)
            it = it->first.rfind("optimizer.", 0) == 0 ? file.tensors.erase(it) : std::next(it);
        file.metadata = {{"format", "pt"}};
        moe::write_safetensors(state_dict_path, file);
        std::printf("wrote %s (%zu tensors, PyTorch's names; tools/graph_torch.py builds the module from the YAML)\n",
                    state_dict_path.c_str(), file.tensors.size());
    }
    return 0;
}

/// The toy recommender: 20 standard normal features; a click whose odds follow a user-item match
/// (f0 f1 + f2 f3) and a clickbait feature (f4); a watch time (minutes, 0 without a click) that
/// follows the match and quality (f5) and punishes clickbait: the two tasks share signal and conflict.
int toy_data(moe::Index rows, std::uint64_t seed, const std::string& path) {
    std::ofstream f(path);
    if (!f) throw moe::io_error(path + ": cannot write the data");
    moe::Rng rng(seed);
    for (int k = 0; k < 20; ++k) f << "f" << k << ",";
    f << "click,watch\n";
    f.precision(6);
    double x[20];
    for (moe::Index r = 0; r < rows; ++r) {
        for (double& v : x) v = rng.normal();
        const double match = x[0] * x[1] + x[2] * x[3];
        const double click_logit = 0.8 * match + 1.2 * x[4] - 0.5;
        const int click = rng.uniform() < 1.0 / (1.0 + std::exp(-click_logit));
        const double watch =
            click ? std::max(0.0, 2.0 + 0.8 * match + 1.0 * x[5] - 1.0 * x[4] + 0.3 * rng.normal()) : 0.0;
        for (double v : x) f << v << ",";
        f << click << "," << watch << "\n";
    }
    std::printf("wrote %lld rows to %s\n", static_cast<long long>(rows), path.c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"moe-graph: model graphs of torch ops written in YAML"};
    app.require_subcommand(1);
    std::string path;
    CLI::App* check_cmd =
        app.add_subcommand("check", "check a graph: every node's shape, parameters and FLOPs per sample");
    check_cmd->add_option("model", path, "the model's YAML file")->required();

    TrainOptions t;
    CLI::App* train_cmd = app.add_subcommand("train", "train a graph on a CSV file and save the model file");
    train_cmd->add_option("model", t.yaml, "the model's YAML file")->required();
    train_cmd
        ->add_option("--data", t.data, "training data: CSV with a header naming the inputs' columns and the labels")
        ->required();
    train_cmd->add_option("--labels", t.labels,
                          "the label column of each output, in order, comma-separated (default: the outputs' names)");
    train_cmd->add_option("--valid", t.valid, "validation data (CSV); default: the last --valid-fraction of --data");
    train_cmd->add_option("--valid-fraction", t.valid_fraction, "rows of --data held out for validation")
        ->check(CLI::Range(0.0, 0.9));
    train_cmd->add_option("--epochs", t.epochs, "epochs")->check(CLI::Range(1, 1000000));
    train_cmd->add_option("--batch-size", t.batch_size, "samples per step")
        ->check(CLI::Range(moe::Index(2), moe::Index(1) << 30));
    train_cmd->add_option("--lr", t.lr, "Adam's learning rate")->check(CLI::PositiveNumber);
    train_cmd->add_option("--seed", t.seed, "initialisation and shuffling seed");
    train_cmd->add_option("--out", t.out, "the model file to write (safetensors)")->required();

    std::string data, out, yaml_out, state_dict_out;
    CLI::App* predict_cmd = app.add_subcommand("predict", "predict every row of a CSV file with a trained model file");
    predict_cmd->add_option("model", path, "the model file (moe-graph train or moe::save)")->required();
    predict_cmd->add_option("--data", data, "CSV with a header naming the inputs' columns")->required();
    predict_cmd->add_option("--out", out, "where to write the predictions (CSV); default: standard output");

    CLI::App* export_cmd =
        app.add_subcommand("export", "write a model file's YAML and its parameters as a plain PyTorch state_dict");
    export_cmd->add_option("model", path, "the model file")->required();
    export_cmd->add_option("--yaml", yaml_out, "where to write the YAML");
    export_cmd->add_option("--state-dict", state_dict_out, "where to write the state_dict (safetensors)");

    moe::Index rows = 20000;
    std::uint64_t seed = 1;
    CLI::App* toy_cmd =
        app.add_subcommand("toy-data", "write the toy recommender data set (f0..f19, click, watch) as CSV");
    toy_cmd->add_option("--rows", rows, "rows (at most 10^8)")->check(CLI::Range(moe::Index(1), moe::Index(100000000)));
    toy_cmd->add_option("--seed", seed, "seed");
    toy_cmd->add_option("--out", out, "the CSV file to write")->required();

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;  // --help is 0; any other usage error 2, as the header says
    }
    try {
        if (*check_cmd) return check(path);
        if (*train_cmd) {
            const CheckedGraph g = check_graph(load_graph_yaml(t.yaml));
            return g.spec.inputs.front().dtype == "float64" ? train<double>(t) : train<float>(t);
        }
        if (*predict_cmd)
            return file_dtype(path) == "float64" ? predict<double>(path, data, out) : predict<float>(path, data, out);
        if (*export_cmd) {
            if (yaml_out.empty() && state_dict_out.empty())
                throw moe::config_error("export: give --yaml, --state-dict or both");
            return file_dtype(path) == "float64" ? export_model<double>(path, yaml_out, state_dict_out)
                                                 : export_model<float>(path, yaml_out, state_dict_out);
        }
        if (*toy_cmd) return toy_data(rows, seed, out);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "moe-graph: %s\n", e.what());
        return 1;
    }
    return 2;
}
