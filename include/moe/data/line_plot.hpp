#pragma once
// Line plots as PNG images (moe::data): learning curves and the like. Axes from the data's ranges
// (x from 0), light grid lines at tenths of each range; each curve a coloured polyline with a dot
// per point. No text is drawn (no font): the PNG's Description names the curves, their colours and
// the axes' ranges.
#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "moe/core/errors.hpp"
#include "moe/data/png.hpp"

namespace moe {

/// One curve: points (x[i], y[i]) and an RGB colour.
struct LineCurve {
    std::string label;
    std::vector<double> x, y;
    std::array<std::uint8_t, 3> color{{0, 0, 0}};
};

/// Draws the curves (width x height pixels, each in [100, 4000]) on axes from x = 0 to the largest
/// x and from the smallest to the largest y, and writes a PNG to path. Throws config_error for
/// curves whose x and y differ in length or hold a non-finite value, io_error naming the file.
inline void write_line_plot(const std::string& path, const std::vector<LineCurve>& curves, const std::string& x_label,
                            const std::string& y_label, int width = 640, int height = 400) {
    const char* who = "moe::write_line_plot";
    detail::require(width >= 100 && width <= 4000 && height >= 100 && height <= 4000, who, ": size must be in [100, 4000], got ",
                    width, " x ", height);
    double x_max = 0, y_min = INFINITY, y_max = -INFINITY;
    for (const LineCurve& c : curves) {
        detail::require(c.x.size() == c.y.size(), who, ": curve '", c.label, "' has ", c.x.size(), " x values and ", c.y.size(), " y values");
        for (std::size_t i = 0; i < c.x.size(); ++i) {
            detail::require(std::isfinite(c.x[i]) && std::isfinite(c.y[i]), who, ": curve '", c.label, "' point ", i, " is not finite");
            x_max = std::max(x_max, c.x[i]), y_min = std::min(y_min, c.y[i]), y_max = std::max(y_max, c.y[i]);
        }
    }
    if (!(y_max > y_min)) y_min = std::isfinite(y_min) ? y_min - 1 : 0, y_max = y_min + 2;
    if (!(x_max > 0)) x_max = 1;
    detail::Canvas img(width, height);
    const int mx = width / 12, my = height / 12;
    auto px = [&](double v) { return mx + int(std::lround(v / x_max * (width - 2 * mx))); };
    auto py = [&](double v) { return height - 1 - my - int(std::lround((v - y_min) / (y_max - y_min) * (height - 2 * my))); };
    const std::array<std::uint8_t, 3> grid{{225, 225, 225}}, axis{{0, 0, 0}};
    for (int k = 0; k <= 10; ++k) {
        const double fx = x_max * k / 10.0, fy = y_min + (y_max - y_min) * k / 10.0;
        img.line(px(fx), py(y_min), px(fx), py(y_max), grid);
        img.line(px(0), py(fy), px(x_max), py(fy), grid);
        img.line(px(fx), py(y_min), px(fx), py(y_min) + my / 4, axis);
        img.line(px(0) - mx / 4, py(fy), px(0), py(fy), axis);
    }
    img.line(px(0), py(y_min), px(x_max), py(y_min), axis, 2);
    img.line(px(0), py(y_min), px(0), py(y_max), axis, 2);
    std::string description = detail::concat("Line plot: x ", x_label, " from 0 to ", x_max, ", y ", y_label, " from ", y_min, " to ",
                                             y_max, "; grid lines at tenths.");
    for (const LineCurve& c : curves) {
        description += detail::concat(" ", c.label, ": rgb(", int(c.color[0]), ",", int(c.color[1]), ",", int(c.color[2]), ").");
        for (std::size_t i = 0; i < c.x.size(); ++i) {
            if (i > 0) img.line(px(c.x[i - 1]), py(c.y[i - 1]), px(c.x[i]), py(c.y[i]), c.color, 3);
            img.dot(px(c.x[i]), py(c.y[i]), c.color, 3);
        }
    }
    detail::write_png(path, img, description);
}

}  // namespace moe
