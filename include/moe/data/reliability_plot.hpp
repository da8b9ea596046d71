#pragma once
// Reliability plots as PNG images (moe::data: zlib compresses the pixels): for each curve the mean
// prediction of every non-empty bin against its fraction of positives, on [0, 1] x [0, 1], with the
// diagonal of perfect calibration. No text is drawn (there is no font here): the axes are ticked
// every 0.1 and the caller says which colour is which (the PNG's tEXt "Description" holds it too).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include <zlib.h>

#include "moe/core/errors.hpp"
#include "moe/tasks/calibration.hpp"

namespace moe {

/// One curve of a reliability plot: its bins (reliability_curve) and an RGB colour.
struct ReliabilityCurve {
    std::string label;
    std::vector<ReliabilityBin> bins;
    std::array<std::uint8_t, 3> color{{0, 0, 0}};
};

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

/// Draws the curves on one reliability plot (size x size pixels, size in [100, 4000]) and writes it
/// as a PNG to path: x the mean prediction of a bin, y its fraction of positives, the dashed
/// diagonal perfect calibration; each curve joins its non-empty bins and marks each with a dot.
/// The PNG's Description names the curves and their colours. Throws io_error naming the file.
inline void write_reliability_plot(const std::string& path, const std::vector<ReliabilityCurve>& curves, int size = 480) {
    detail::require(size >= 100 && size <= 4000, "moe::write_reliability_plot: size must be in [100, 4000], got ", size);
    detail::Canvas img(size, size);
    const int m = size / 12, span = size - 2 * m;
    auto px = [&](double v) { return m + int(std::lround(std::clamp(v, 0.0, 1.0) * span)); };
    auto py = [&](double v) { return size - 1 - px(v); };
    const std::array<std::uint8_t, 3> grid{{225, 225, 225}}, axis{{0, 0, 0}}, diag{{140, 140, 140}};
    for (int k = 0; k <= 10; ++k) {
        const double v = k / 10.0;
        img.line(px(v), py(0), px(v), py(1), grid);
        img.line(px(0), py(v), px(1), py(v), grid);
        img.line(px(v), py(0), px(v), py(0) + m / 4, axis);  // ticks
        img.line(px(0) - m / 4, py(v), px(0), py(v), axis);
    }
    img.line(px(0), py(0), px(1), py(0), axis, 2);
    img.line(px(0), py(0), px(0), py(1), axis, 2);
    img.line(px(0), py(0), px(1), py(1), diag, 1, 6);
    std::string description = "Reliability plot: x mean prediction of a bin, y fraction of positives, dashed diagonal perfect calibration.";
    for (const ReliabilityCurve& c : curves) {
        description += detail::concat(" ", c.label, ": rgb(", int(c.color[0]), ",", int(c.color[1]), ",", int(c.color[2]), ").");
        int last_x = -1, last_y = -1;
        for (const ReliabilityBin& b : c.bins) {
            if (b.count == 0) continue;
            const int x = px(b.mean_prediction), y = py(b.fraction_positive);
            if (last_x >= 0) img.line(last_x, last_y, x, y, c.color, 3);
            img.dot(x, y, c.color, 4);
            last_x = x, last_y = y;
        }
    }
    detail::write_png(path, img, description);
}

}  // namespace moe
