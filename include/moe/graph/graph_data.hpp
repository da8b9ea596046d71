#pragma once
// Data of graph models from CSV files with a header: the graph's inputs name their columns in the
// YAML (`columns: [f0, f1, ...]`), the tasks' labels are further columns. Every column the model
// needs must be in the header (an error lists the missing ones and the file's); other columns are
// ignored, so one file can serve several models. An empty label field is a missing label (masked).
#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/graph/graph_model.hpp"
#include "moe/train/dataset.hpp"

namespace moe::graph {

namespace detail {
inline std::vector<std::string> split_csv_line(const std::string& line) {
    std::vector<std::string> out;
    std::size_t begin = 0;
    while (true) {
        const auto comma = line.find(',', begin);
        std::string field = line.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin);
        while (!field.empty() && (field.back() == ' ' || field.back() == '\r')) field.pop_back();
        while (!field.empty() && field.front() == ' ') field.erase(field.begin());
        out.push_back(std::move(field));
        if (comma == std::string::npos) return out;
        begin = comma + 1;
    }
}
}  // namespace detail

/// The input columns of a graph, in the order of x's rows (every input's `columns`, in order).
/// config_error when an input has no columns.
inline std::vector<std::string> input_columns(const CheckedGraph& g) {
    std::vector<std::string> cols;
    for (const auto& in : g.spec.inputs) {
        if (in.columns.empty())
            throw graph_error(
                in.where, "input '" + in.name + "' has no columns: reading a data file needs the names of its columns");
        cols.insert(cols.end(), in.columns.begin(), in.columns.end());
    }
    return cols;
}

/// Reads a CSV file (a header line, then one sample per line) for a graph model: x from the inputs'
/// columns, labels from the columns `labels` (one per task, in the order of the outputs; none for
/// prediction). io_error naming the file, the line and the column for a missing column, a line with
/// the wrong number of fields, or a field that is not a finite number.
template <class T>
MultiTaskData<T> read_graph_csv(const std::string& path, const CheckedGraph& g,
                                const std::vector<std::string>& labels) {
    const std::vector<std::string> inputs = input_columns(g);
    std::ifstream f(path, std::ios::binary);
    if (!f) throw io_error(path + ": cannot open the data file");
    std::string line;
    if (!std::getline(f, line))
        throw io_error(path + ": the data file is empty (a header line of column names is needed)");
    const std::vector<std::string> header = detail::split_csv_line(line);
    std::map<std::string, std::size_t> where;
    for (std::size_t i = 0; i < header.size(); ++i)
        if (!where.emplace(header[i], i).second)
            throw io_error(path + ":1: column '" + header[i] + "' appears twice in the header");
    if (!labels.empty() && labels.size() != g.spec.outputs.size())
        throw config_error(moe::detail::concat(path, ": ", labels.size(), " label columns for the model's ",
                                               g.spec.outputs.size(),
                                               " tasks (one per output, in the order of the outputs block)"));
    std::string missing;
    auto index_of = [&](const std::string& name, const char* role) -> std::size_t {
        const auto it = where.find(name);
        if (it == where.end()) {
            missing += (missing.empty() ? "" : ", ") + name + " (" + role + ")";
            return 0;
        }
        return it->second;
    };
    std::vector<std::size_t> x_at, y_at;
    for (const auto& c : inputs) x_at.push_back(index_of(c, "input"));
    for (const auto& c : labels) y_at.push_back(index_of(c, "label"));
    if (!missing.empty()) {
        std::string have;
        for (const auto& h : header) have += (have.empty() ? "" : ", ") + h;
        throw io_error(path + ": the columns do not match the model's: missing " + missing + "; the file has " + have);
    }
    std::vector<T> xs, ys, ms;
    bool masked = false;
    Index rows = 0;
    int line_no = 1;
    while (std::getline(f, line)) {
        ++line_no;
        if (line.empty() || line == "\r") continue;
        const std::vector<std::string> fields = detail::split_csv_line(line);
        if (fields.size() != header.size())
            throw io_error(moe::detail::concat(path, ":", line_no, ": ", fields.size(), " fields, the header has ",
                                               header.size()));
        auto number = [&](std::size_t i, bool allow_empty, bool& empty) -> T {
            const std::string& s = fields[i];
            empty = s.empty();
            if (empty && allow_empty) return T(0);
            char* end = nullptr;
            const double v = std::strtod(s.c_str(), &end);
            if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v))
                throw io_error(moe::detail::concat(path, ":", line_no, ": column '", header[i], "' is '", s,
                                                   "', expected a finite number"));
            return T(v);
        };
        bool empty = false;
        for (std::size_t i : x_at) xs.push_back(number(i, false, empty));
        for (std::size_t i : y_at) {
            ys.push_back(number(i, true, empty));
            ms.push_back(empty ? T(0) : T(1));
            masked = masked || empty;
        }
        ++rows;
    }
    if (rows == 0) throw io_error(path + ": no data rows after the header");
    MultiTaskData<T> d;
    d.x = Eigen::Map<const Matrix<T>>(xs.data(), Index(x_at.size()), rows);
    d.labels = labels.empty() ? Matrix<T>(Index(g.spec.outputs.size()), rows)
                              : Matrix<T>(Eigen::Map<const Matrix<T>>(ys.data(), Index(y_at.size()), rows));
    if (labels.empty()) d.labels.setZero();
    if (masked) d.mask = Eigen::Map<const Matrix<T>>(ms.data(), Index(y_at.size()), rows);
    return d;
}

}  // namespace moe::graph
