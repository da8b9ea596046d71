#pragma once
// Reliability plots as PNG images (moe::data: see png.hpp): for each curve the mean
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

#include "moe/core/errors.hpp"
#include "moe/data/png.hpp"
#include "moe/tasks/calibration.hpp"

namespace moe {

/// One curve of a reliability plot: its bins (reliability_curve) and an RGB colour.
struct ReliabilityCurve {
    std::string label;
    std::vector<ReliabilityBin> bins;
    std::array<std::uint8_t, 3> color{{0, 0, 0}};
};


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
