#pragma once
// Reading text files line by line, gzip-compressed or plain: zlib's gz* functions read both, so a
// ".gz" file and its uncompressed form give the same lines. Needs zlib: link moe::data.
#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <zlib.h>

#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// The lines of a text file, gzip or plain, without their line endings ("\n" or "\r\n").
/// A truncated or corrupt .gz gives io_error naming the file and the last line read; so does a
/// file that cannot be opened. Not copyable (it owns the open file).
class LineReader {
public:
    explicit LineReader(std::string path) : path_(std::move(path)) {
        file_ = gzopen(path_.c_str(), "rb");
        if (!file_)
            throw io_error(detail::concat("moe::LineReader: cannot open '", path_, "': ",
                                          errno ? std::strerror(errno) : "out of memory"));
        gzbuffer(file_, 1 << 17);
    }
    ~LineReader() {
        if (file_) gzclose(file_);
    }
    LineReader(const LineReader&) = delete;
    LineReader& operator=(const LineReader&) = delete;

    /// The next line into `line`; false at the end of the file.
    bool next(std::string& line) {
        line.clear();
        char chunk[4096];
        for (;;) {
            if (!gzgets(file_, chunk, sizeof chunk)) {
                check_stream();
                if (line.empty()) return false;
                break;  // a last line without a newline
            }
            const std::size_t n = std::strlen(chunk);
            line.append(chunk, n);
            if (n > 0 && chunk[n - 1] == '\n') break;
            if (line.size() > kMaxLine)
                throw io_error(detail::concat("moe::LineReader: '", path_, "' line ", line_ + 1, " is longer than ", kMaxLine,
                                              " bytes: not a text table"));
        }
        ++line_;
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
        return true;
    }

    /// 1-based number of the last line next() returned.
    Index line_number() const { return line_; }
    const std::string& path() const { return path_; }

private:
    static constexpr std::size_t kMaxLine = 1 << 20;

    void check_stream() const {
        int code = Z_OK;
        const char* msg = gzerror(file_, &code);
        if (code != Z_OK && code != Z_STREAM_END)
            throw io_error(detail::concat("moe::LineReader: '", path_, "' is corrupt or truncated after line ", line_, ": ",
                                          msg ? msg : "zlib error"));
    }

    std::string path_;
    gzFile file_ = nullptr;
    Index line_ = 0;
};

/// Splits `line` at every `separator` into `fields` (views into line).
inline void split_fields(std::string_view line, std::string_view separator, std::vector<std::string_view>& fields) {
    fields.clear();
    std::size_t start = 0;
    for (;;) {
        const std::size_t at = line.find(separator, start);
        if (at == std::string_view::npos) {
            fields.push_back(line.substr(start));
            return;
        }
        fields.push_back(line.substr(start, at - start));
        start = at + separator.size();
    }
}

}  // namespace moe
