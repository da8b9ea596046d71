#pragma once
// A small RGB canvas and its PNG encoding (moe::data: zlib compresses the pixels), for the plots the
// library writes (reliability_plot.hpp, line_plot.hpp). No text: there is no font here.
#include <array>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <zlib.h>

#include "moe/core/errors.hpp"

namespace moe {

namespace detail {
/// An RGB image in memory with the few drawing operations a plot needs.
class Canvas {
public:
    Canvas(int width, int height) : w_(width), h_(height), px_(std::size_t(width) * std::size_t(height) * 3, 255) {}
    int width() const { return w_; }
    int height() const { return h_; }
    void set(int x, int y, const std::array<std::uint8_t, 3>& c) {
        if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
        const std::size_t i = (std::size_t(y) * std::size_t(w_) + std::size_t(x)) * 3;
        px_[i] = c[0], px_[i + 1] = c[1], px_[i + 2] = c[2];
    }
    /// A line of the given thickness (Bresenham, a square brush); every `dash`-th run of pixels
    /// skipped when dash > 0.
    void line(int x0, int y0, int x1, int y1, const std::array<std::uint8_t, 3>& c, int thick = 1, int dash = 0) {
        const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
        int err = dx + dy, step = 0;
        for (;;) {
            if (dash == 0 || (step / dash) % 2 == 0) dot(x0, y0, c, thick / 2);
            ++step;
            if (x0 == x1 && y0 == y1) break;
            const int e2 = 2 * err;
            if (e2 >= dy) err += dy, x0 += sx;
            if (e2 <= dx) err += dx, y0 += sy;
        }
    }
    /// A filled square of half-width r centred on (x, y).
    void dot(int x, int y, const std::array<std::uint8_t, 3>& c, int r) {
        for (int yy = y - r; yy <= y + r; ++yy)
            for (int xx = x - r; xx <= x + r; ++xx) set(xx, yy, c);
    }
    const std::vector<std::uint8_t>& pixels() const { return px_; }

private:
    int w_, h_;
    std::vector<std::uint8_t> px_;
};

inline void put_u32(std::string& out, std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(char((v >> s) & 0xFF));
}
inline void png_chunk(std::string& out, const char* type, const std::string& data) {
    put_u32(out, std::uint32_t(data.size()));
    const std::string body = std::string(type, 4) + data;
    out += body;
    put_u32(out, std::uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size()))));
}

/// Writes an RGB canvas as an 8-bit PNG (filter 0 on every row) with a tEXt Description.
inline void write_png(const std::string& path, const Canvas& img, const std::string& description) {
    std::string raw;
    raw.reserve(std::size_t(img.height()) * (std::size_t(img.width()) * 3 + 1));
    for (int y = 0; y < img.height(); ++y) {
        raw.push_back('\0');
        raw.append(reinterpret_cast<const char*>(img.pixels().data()) + std::size_t(y) * std::size_t(img.width()) * 3,
                   std::size_t(img.width()) * 3);
    }
    uLongf size = compressBound(uLong(raw.size()));
    std::string z(size, '\0');
    if (compress2(reinterpret_cast<Bytef*>(&z[0]), &size, reinterpret_cast<const Bytef*>(raw.data()), uLong(raw.size()), 9) != Z_OK)
        throw io_error(concat(path, ": compressing the image failed"));
    z.resize(size);
    std::string png("\x89PNG\r\n\x1a\n", 8), ihdr;
    put_u32(ihdr, std::uint32_t(img.width()));
    put_u32(ihdr, std::uint32_t(img.height()));
    ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8 bits, RGB, deflate, filter 0, no interlace
    png_chunk(png, "IHDR", ihdr);
    png_chunk(png, "tEXt", std::string("Description") + '\0' + description);
    png_chunk(png, "IDAT", z);
    png_chunk(png, "IEND", "");
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    if (!f) throw io_error(concat(path, ": cannot open for writing"));
    f.write(png.data(), std::streamsize(png.size()));
    if (!f) throw io_error(concat(path, ": writing failed"));
}
}  // namespace detail

}  // namespace moe
