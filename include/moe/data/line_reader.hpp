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

    /// The next line into `line`; false at the end of the file. A line holding a NUL byte is an
    /// io_error naming the file, the line and the column (a binary file, or a corrupt one).
    bool next(std::string& line) {
        line.clear();
        bool any = false;
        for (;;) {
            if (pos_ == len_) {
                const int got = gzread(file_, buffer_.data(), static_cast<unsigned>(buffer_.size()));
                if (got < 0) check_stream();
                pos_ = 0;
                len_ = got > 0 ? static_cast<std::size_t>(got) : 0;
                if (len_ == 0) {
                    check_stream();
                    if (!any) return false;
                    break;  // a last line without a newline
                }
            }
            any = true;
            const char* start = buffer_.data() + pos_;
            const auto* newline = static_cast<const char*>(std::memchr(start, '\n', len_ - pos_));
            const std::size_t n = newline ? static_cast<std::size_t>(newline - start) : len_ - pos_;
            line.append(start, n);
            pos_ += n;
            if (newline) {
                ++pos_;
                break;
            }
            if (line.size() > kMaxLine)
                throw io_error(detail::concat("moe::LineReader: '", path_, "' line ", line_ + 1, " is longer than ", kMaxLine,
                                              " bytes: not a text table"));
        }
        ++line_;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        const auto nul = line.find('\0');
        if (nul != std::string::npos)
            throw io_error(detail::concat("moe::LineReader: '", path_, "' line ", line_, " holds a NUL byte at column ", nul + 1,
                                          ": not a text file"));
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
    std::vector<char> buffer_ = std::vector<char>(1 << 16);
    std::size_t pos_ = 0, len_ = 0;  // the unread part of buffer_ is [pos_, len_)
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
