#pragma once
// The hashing trick: ids from raw values without a vocabulary, as hash(value) mod rows.
//
// The hash is 64-bit FNV-1a (offset basis 14695981039346656037, prime 1099511628211) over the
// value's bytes: a string's bytes as stored (UTF-8 for text), an integer's 8 bytes of its two's
// complement in little-endian order. Any language reproduces it in a few lines, e.g. Python:
//
//   def fnv1a64(data: bytes) -> int:
//       h = 14695981039346656037
//       for b in data: h = ((h ^ b) * 1099511628211) % 2**64
//       return h
//   fnv1a64("item_42".encode()) % rows;  fnv1a64((42).to_bytes(8, "little", signed=True)) % rows
#include <cstdint>
#include <string_view>

#include "moe/core/errors.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// 64-bit FNV-1a of a byte string.
inline std::uint64_t fnv1a64(std::string_view bytes) {
    std::uint64_t h = 14695981039346656037ULL;
    for (const char c : bytes) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ULL;
    }
    return h;
}

/// 64-bit FNV-1a of an integer's 8 little-endian bytes (the same on every platform).
inline std::uint64_t fnv1a64(std::int64_t value) {
    const auto u = static_cast<std::uint64_t>(value);
    std::uint64_t h = 14695981039346656037ULL;
    for (int byte = 0; byte < 8; ++byte) {
        h ^= (u >> (8 * byte)) & 0xFFu;
        h *= 1099511628211ULL;
    }
    return h;
}

/// The row of `value` in a table of `rows` rows: fnv1a64(value) mod rows.
inline std::int64_t hashed_id(std::string_view value, Index rows) {
    detail::require(rows > 0, "moe::hashed_id: rows must be positive, got ", rows);
    return static_cast<std::int64_t>(fnv1a64(value) % static_cast<std::uint64_t>(rows));
}
inline std::int64_t hashed_id(std::int64_t value, Index rows) {
    detail::require(rows > 0, "moe::hashed_id: rows must be positive, got ", rows);
    return static_cast<std::int64_t>(fnv1a64(value) % static_cast<std::uint64_t>(rows));
}

}  // namespace moe
