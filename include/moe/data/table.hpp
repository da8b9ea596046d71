#pragma once
// A delimited text table (CSV-like, gzip or plain) read into typed columns: numbers as doubles,
// categories as codes into the distinct values of the file. Needs zlib: link moe::data.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "moe/data/line_reader.hpp"

namespace moe {

enum class ColumnKind { numeric, categorical, ignored };

/// One column of a table file: its name and how it is read.
struct ColumnSpec {
    std::string name;
    ColumnKind kind = ColumnKind::categorical;
};

/// How the lines of a table file are written.
struct TableFormat {
    std::string separator = ",";  ///< between fields (", " for the UCI census files)
    std::string missing = "?";    ///< a missing value: NaN in a numeric column, a category of its own otherwise
    std::string line_end;         ///< stripped from the end of each line when present ("." in the UCI files)
    Index max_rows = 0;           ///< stop after this many rows; 0 reads them all
    /// Read only the data rows r (counted from 0, empty lines not counted) with r % shards == shard:
    /// one process's shard in data-parallel training (moe::mpi). The other rows are skipped
    /// unparsed. max_rows counts the rows kept.
    Index shard = 0, shards = 1;
};

/// A column as read: numbers (numeric; NaN where missing) or codes into values (categorical,
/// values in order of first appearance). Ignored columns keep only their name.
struct TableColumn {
    std::string name;
    ColumnKind kind = ColumnKind::categorical;
    std::vector<double> numbers;
    std::vector<std::uint32_t> codes;
    std::vector<std::string> values;
};

/// A table read from a file. Rows are the lines that are not empty.
struct Table {
    std::string path;
    Index rows = 0;
    std::vector<TableColumn> columns;

    const TableColumn& column(const std::string& name) const {
        for (const auto& c : columns)
            if (c.name == name) return c;
        throw config_error(detail::concat("moe::Table: '", path, "' has no column '", name, "'"));
    }
    /// The category of row r in a categorical column.
    const std::string& category(const TableColumn& c, Index r) const { return c.values[c.codes[static_cast<std::size_t>(r)]]; }
};

/// Reads a table file with the given columns. A line with the wrong number of fields or a numeric
/// field that is not a finite number gives io_error naming the file, the line and the column.
inline Table read_table(const std::string& path, const std::vector<ColumnSpec>& columns, const TableFormat& format = {}) {
    detail::require(!columns.empty(), "moe::read_table: no columns given for '", path, "'");
    detail::require(!format.separator.empty(), "moe::read_table: the separator is empty");
    detail::require(format.shards >= 1 && format.shard >= 0 && format.shard < format.shards, "moe::read_table: shard ",
                    format.shard, " of ", format.shards, " shards (expected shards >= 1 and 0 <= shard < shards)");
    Table table;
    table.path = path;
    for (const auto& spec : columns) table.columns.push_back(TableColumn{spec.name, spec.kind, {}, {}, {}});
    std::vector<std::unordered_map<std::string, std::uint32_t>> index(columns.size());
    LineReader reader(path);
    std::string line, number;
    std::vector<std::string_view> fields;
    Index data_row = 0;
    while ((format.max_rows == 0 || table.rows < format.max_rows) && reader.next(line)) {
        std::string_view text = line;
        if (!format.line_end.empty() && text.size() >= format.line_end.size() &&
            text.substr(text.size() - format.line_end.size()) == format.line_end)
            text.remove_suffix(format.line_end.size());
        if (text.find_first_not_of(" \t") == std::string_view::npos) continue;
        if (data_row++ % format.shards != format.shard) continue;
        split_fields(text, format.separator, fields);
        if (fields.size() != columns.size())
            throw io_error(detail::concat("moe::read_table: '", path, "' line ", reader.line_number(), ": ", fields.size(),
                                          " fields, expected ", columns.size(), " separated by '", format.separator, "'"));
        for (std::size_t c = 0; c < columns.size(); ++c) {
            TableColumn& col = table.columns[c];
            const std::string_view f = fields[c];
            if (col.kind == ColumnKind::numeric) {
                double v = std::nan("");
                if (f != format.missing) {
                    number.assign(f);
                    char* end = nullptr;
                    v = std::strtod(number.c_str(), &end);
                    if (number.empty() || end != number.c_str() + number.size() || !std::isfinite(v))
                        throw io_error(detail::concat("moe::read_table: '", path, "' line ", reader.line_number(), ", column ",
                                                      c, " ('", col.name, "'): '", number, "' is not a finite number"));
                }
                col.numbers.push_back(v);
            } else if (col.kind == ColumnKind::categorical) {
                auto [it, added] = index[c].try_emplace(std::string(f), static_cast<std::uint32_t>(col.values.size()));
                if (added) col.values.emplace_back(f);
                col.codes.push_back(it->second);
            }
        }
        ++table.rows;
    }
    return table;
}

}  // namespace moe
