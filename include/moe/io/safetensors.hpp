#pragma once
// Reading and writing safetensors files: an 8-byte little-endian header length N, N bytes of JSON
// (name -> {dtype, shape, data_offsets}, plus an optional "__metadata__" of string values), then the
// raw little-endian row-major tensor data. Everything in the header is checked before it is used:
// a lying header gives moe::io_error naming the file and the tensor, never a crash or a huge allocation.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// Element types a tensor can have in a file.
enum class DType { f32, f64, i64 };

inline const char* to_string(DType d) {
    switch (d) {
        case DType::f32: return "F32";
        case DType::f64: return "F64";
        case DType::i64: return "I64";
    }
    return "?";
}
inline std::size_t dtype_size(DType d) { return d == DType::f32 ? 4 : 8; }

/// One tensor of a safetensors file: dtype, shape (row-major, PyTorch's) and its bytes.
struct Tensor {
    DType dtype = DType::f32;
    std::vector<std::int64_t> shape;
    std::vector<unsigned char> bytes;

    std::int64_t numel() const {
        std::int64_t n = 1;
        for (auto s : shape) n *= s;
        return n;
    }
    /// The values converted to T, in row-major order (as many as the bytes hold).
    template <class T>
    std::vector<T> values() const {
        const std::size_t n = bytes.size() / dtype_size(dtype);
        std::vector<T> out(n);
        for (std::size_t i = 0; i < n; ++i) {
            const unsigned char* p = bytes.data() + i * dtype_size(dtype);
            if (dtype == DType::f32) {
                float v;
                std::memcpy(&v, p, 4);
                out[i] = static_cast<T>(v);
            } else if (dtype == DType::f64) {
                double v;
                std::memcpy(&v, p, 8);
                out[i] = static_cast<T>(v);
            } else {
                std::int64_t v;
                std::memcpy(&v, p, 8);
                out[i] = static_cast<T>(v);
            }
        }
        return out;
    }
    /// As a matrix with PyTorch's row/column meaning: a (r, c) tensor becomes r x c; a (n) tensor
    /// n x 1; a scalar 1 x 1. Higher ranks are refused.
    template <class T>
    Matrix<T> matrix() const {
        if (shape.size() > 2) throw shape_error("moe::Tensor::matrix: tensor has rank > 2");
        const Index r = shape.empty() ? 1 : static_cast<Index>(shape[0]);
        const Index c = shape.size() == 2 ? static_cast<Index>(shape[1]) : 1;
        const auto v = values<T>();
        return Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(v.data(), r, c);
    }
    /// A row-major (B, F) batch as the column-major F x B matrix it is byte for byte.
    template <class T>
    Matrix<T> batch() const {
        if (shape.size() != 2) throw shape_error("moe::Tensor::batch: a batch must have rank 2");
        const auto v = values<T>();
        return Eigen::Map<const Matrix<T>>(v.data(), static_cast<Index>(shape[1]), static_cast<Index>(shape[0]));
    }
    template <class T>
    static Tensor from_matrix(const Matrix<T>& m) {  // r x c matrix -> (r, c) tensor
        Tensor t;
        t.dtype = std::is_same_v<T, float> ? DType::f32 : DType::f64;
        t.shape = {m.rows(), m.cols()};
        const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rm = m;
        t.bytes.resize(static_cast<std::size_t>(rm.size()) * sizeof(T));
        std::memcpy(t.bytes.data(), rm.data(), t.bytes.size());
        return t;
    }
};

/// The content of a safetensors file: tensors by name and the string metadata.
struct SafetensorsFile {
    std::map<std::string, Tensor> tensors;
    std::map<std::string, std::string> metadata;

    bool contains(const std::string& name) const { return tensors.count(name) != 0; }
    const Tensor& at(const std::string& name) const {
        auto it = tensors.find(name);
        if (it == tensors.end()) throw io_error("moe::SafetensorsFile: no tensor named '" + name + "'");
        return it->second;
    }
};

namespace detail {
/// out = a * b; true when the product does not fit in 64 bits.
inline bool mul_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t& out) { return __builtin_mul_overflow(a, b, &out); }

/// nlohmann::json::parse, but a key that appears twice in one object is an io_error (the plain
/// parser keeps the last one silently: a file could then show one tensor to one reader and
/// another to the next).
inline nlohmann::json parse_json_unique_keys(const std::string& text, const std::string& path) {
    std::vector<std::set<std::string>> keys;  // the keys of each open object
    using event = nlohmann::json::parse_event_t;
    auto callback = [&](int, event ev, nlohmann::json& parsed) {
        if (ev == event::object_start) keys.emplace_back();
        else if (ev == event::object_end) keys.pop_back();
        else if (ev == event::key) {
            const std::string key = parsed.get<std::string>();
            if (!keys.back().insert(key).second)
                throw io_error(concat(path, ": the header names '", key, "' twice in one object"));
        }
        return true;
    };
    return nlohmann::json::parse(text, callback);
}

inline DType parse_dtype(const std::string& s, const std::string& file, const std::string& tensor) {
    if (s == "F32") return DType::f32;
    if (s == "F64") return DType::f64;
    if (s == "I64") return DType::i64;
    throw io_error(concat(file, ": tensor '", tensor, "' has dtype '", s, "', expected F32, F64 or I64"));
}
}  // namespace detail

/// Reads and validates a whole safetensors file. Throws io_error naming the file (and tensor).
inline SafetensorsFile read_safetensors(const std::string& path) {
    using detail::concat;
    // A directory opens as a stream on Linux and reports a nonsense size: refuse anything but a file.
    std::error_code ec;
    if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
        throw io_error(path + ": not a regular file (is it a directory?)");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw io_error(path + ": cannot open for reading");
    in.seekg(0, std::ios::end);
    const std::streamoff size_signed = in.tellg();
    if (size_signed < 0) throw io_error(path + ": cannot determine the file size (is it a directory?)");
    const auto file_size = static_cast<std::uint64_t>(size_signed);
    in.seekg(0);
    if (file_size < 8) throw io_error(concat(path, ": file is ", file_size, " bytes, too short for a safetensors header"));
    unsigned char len_bytes[8];
    in.read(reinterpret_cast<char*>(len_bytes), 8);
    if (!in) throw io_error(path + ": read error in the header length");
    std::uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
    if (header_len > file_size - 8)
        throw io_error(concat(path, ": header length ", header_len, " runs past the end of the file (", file_size, " bytes)"));
    std::string header(static_cast<std::size_t>(header_len), '\0');
    in.read(header.data(), static_cast<std::streamsize>(header_len));
    if (!in) throw io_error(path + ": read error in the header");
    const std::uint64_t data_size = file_size - 8 - header_len;

    nlohmann::json j;
    try {
        j = detail::parse_json_unique_keys(header, path);
    } catch (const nlohmann::json::exception& e) {
        throw io_error(concat(path, ": header is not valid JSON (", e.what(), ")"));
    }
    if (!j.is_object()) throw io_error(path + ": header is not a JSON object");

    SafetensorsFile out;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    std::vector<std::string> names;
    for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string& name = it.key();
        if (name == "__metadata__") {
            if (!it->is_object()) throw io_error(path + ": __metadata__ is not an object");
            for (auto m = it->begin(); m != it->end(); ++m) {
                if (!m->is_string()) throw io_error(concat(path, ": __metadata__ value '", m.key(), "' is not a string"));
                out.metadata[m.key()] = m->get<std::string>();
            }
            continue;
        }
        const auto& e = *it;
        if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets") ||
            !e["dtype"].is_string() || !e["shape"].is_array() || !e["data_offsets"].is_array() ||
            e["data_offsets"].size() != 2)
            throw io_error(concat(path, ": tensor '", name, "' needs dtype (string), shape (array) and data_offsets ([begin, end])"));
        Tensor t;
        t.dtype = detail::parse_dtype(e["dtype"].get<std::string>(), path, name);
        // Every product is checked: a dimension above INT64_MAX (which would become a negative
        // index), or an element or byte count that wraps modulo 2^64 (which could match a small
        // data range), is refused here, not found later by an allocation or an Eigen assertion.
        std::uint64_t numel = 1;
        for (const auto& d : e["shape"]) {
            if (!d.is_number_unsigned()) throw io_error(concat(path, ": tensor '", name, "' has a shape entry that is not a non-negative integer"));
            const auto v = d.get<std::uint64_t>();
            if (v > std::uint64_t(INT64_MAX))
                throw io_error(concat(path, ": tensor '", name, "' has a dimension of ", v, ", above the largest index ", INT64_MAX));
            if (detail::mul_overflows(numel, v, numel))
                throw io_error(concat(path, ": tensor '", name, "' has a shape ", e["shape"].dump(),
                                      " whose element count overflows 64 bits"));
            t.shape.push_back(static_cast<std::int64_t>(v));
        }
        std::uint64_t nbytes = 0;
        if (detail::mul_overflows(numel, std::uint64_t(dtype_size(t.dtype)), nbytes) || numel > std::uint64_t(INT64_MAX))
            throw io_error(concat(path, ": tensor '", name, "' has a shape ", e["shape"].dump(), " whose byte count overflows 64 bits"));
        const auto& off = e["data_offsets"];
        if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
            throw io_error(concat(path, ": tensor '", name, "' has data_offsets that are not non-negative integers"));
        const auto begin = off[0].get<std::uint64_t>(), end = off[1].get<std::uint64_t>();
        if (begin > end || end > data_size)
            throw io_error(concat(path, ": tensor '", name, "' has data_offsets [", begin, ", ", end,
                                  "] outside the data section of ", data_size, " bytes"));
        if (end - begin != nbytes)
            throw io_error(concat(path, ": tensor '", name, "' has ", end - begin, " bytes, its shape and dtype need ", nbytes));
        ranges.emplace_back(begin, end);
        names.push_back(name);
        out.tensors.emplace(name, std::move(t));
    }
    // The tensors must tile the data section exactly: no overlap, no gap, nothing left over.
    std::vector<std::size_t> order(ranges.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ranges[a] < ranges[b]; });
    std::uint64_t pos = 0;
    for (std::size_t i : order) {
        if (ranges[i].first != pos)
            throw io_error(concat(path, ": tensor '", names[i], "' starts at byte ", ranges[i].first, " of the data, expected ",
                                  pos, " (tensors overlap or leave a gap)"));
        pos = ranges[i].second;
    }
    if (pos != data_size)
        throw io_error(concat(path, ": the tensors cover ", pos, " bytes of data, the file holds ", data_size));
    // Only now, with every size checked against the real file size, read the data.
    for (std::size_t i : order) {
        Tensor& t = out.tensors[names[i]];
        t.bytes.resize(static_cast<std::size_t>(ranges[i].second - ranges[i].first));
        in.read(reinterpret_cast<char*>(t.bytes.data()), static_cast<std::streamsize>(t.bytes.size()));
        if (!in) throw io_error(concat(path, ": read error in tensor '", names[i], "'"));
    }
    return out;
}

namespace detail {
/// Writes all of [data, data + size) to fd, retrying short writes and EINTR; false on an error.
inline bool write_all(int fd, const void* data, std::size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t n = ::write(fd, p, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}
}  // namespace detail

/// Writes a safetensors file atomically: the bytes go to a temporary file in the same folder, which
/// is flushed to disk (fsync) and then renamed over path, and the folder is synced. A failure at any
/// point (disk full, a killed process) leaves whatever was at path before untouched and removes the
/// temporary file; io_error names the file and the failing step. Tensors are written in name order,
/// the data section aligned to 8 bytes as the reference writer does.
inline void write_safetensors(const std::string& path, const SafetensorsFile& file) {
    using detail::concat;
    nlohmann::json header = nlohmann::json::object();
    std::uint64_t offset = 0;
    for (const auto& [name, t] : file.tensors) {
        if (name == "__metadata__") throw io_error(concat(path, ": '__metadata__' is not a tensor name"));
        std::uint64_t numel = 1;
        for (auto d : t.shape) {
            if (d < 0) throw io_error(concat(path, ": tensor '", name, "' has a negative dimension"));
            numel *= static_cast<std::uint64_t>(d);
        }
        if (numel * dtype_size(t.dtype) != t.bytes.size())
            throw io_error(concat(path, ": tensor '", name, "' has ", t.bytes.size(), " bytes, its shape and dtype need ",
                                  numel * dtype_size(t.dtype)));
        header[name] = {{"dtype", to_string(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
        offset += t.bytes.size();
    }
    if (!file.metadata.empty()) header["__metadata__"] = file.metadata;
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((std::uint64_t(text.size()) >> (8 * i)) & 0xff);

    std::string tmp = path + ".tmp-XXXXXX";
    const int fd = ::mkstemp(tmp.data());
    if (fd < 0) throw io_error(concat(path, ": cannot create a temporary file next to it: ", std::strerror(errno)));
    auto fail = [&](const char* step) {
        const std::string why = std::strerror(errno);
        ::close(fd);
        std::remove(tmp.c_str());
        throw io_error(concat(path, ": ", step, " failed (", why, "); the previous file, if any, is unchanged"));
    };
    if (::fchmod(fd, 0644) != 0) fail("setting the permissions of the temporary file");
    if (!detail::write_all(fd, len, 8) || !detail::write_all(fd, text.data(), text.size())) fail("writing the header");
    for (const auto& [name, t] : file.tensors)
        if (!detail::write_all(fd, t.bytes.data(), t.bytes.size())) fail("writing the tensor data");
    if (::fsync(fd) != 0) fail("flushing to disk (fsync)");
    if (::close(fd) != 0) {
        const std::string why = std::strerror(errno);
        std::remove(tmp.c_str());
        throw io_error(concat(path, ": closing the temporary file failed (", why, "); the previous file is unchanged"));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        const std::string why = std::strerror(errno);
        std::remove(tmp.c_str());
        throw io_error(concat(path, ": renaming the temporary file over it failed (", why, "); the previous file is unchanged"));
    }
    // Make the rename itself durable; a failure here cannot undo it, so it is not an error.
    const auto slash = path.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

}  // namespace moe
