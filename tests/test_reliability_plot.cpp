// Reliability plots: the PNG is well-formed (signature, IHDR, CRCs, pixels that inflate to the
// image), the curve's dots land where its bins say, and bad arguments are refused.
#include <cstring>
#include <fstream>
#include <string>

#include <zlib.h>

#include "moe/data/line_plot.hpp"
#include "moe/data/reliability_plot.hpp"
#include "support/catch.hpp"
#include "support/temp_dir.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_reliability_plot {

using namespace moe;
using Catch::Matchers::Contains;

namespace {
std::uint32_t get_u32(const std::string& s, std::size_t at) {
    return std::uint32_t(std::uint8_t(s[at])) << 24 | std::uint32_t(std::uint8_t(s[at + 1])) << 16 |
           std::uint32_t(std::uint8_t(s[at + 2])) << 8 | std::uint32_t(std::uint8_t(s[at + 3]));
}
}  // namespace

TEST_CASE("write_reliability_plot: a valid PNG whose dots sit at the bins' points", "[calibration][plot]") {
    testing::TempDir dir("reliability_plot");
    const std::string path = dir.file("plot.png");
    // A perfectly calibrated curve: bin k at (0.05 + 0.1 k, 0.05 + 0.1 k).
    std::vector<double> p, y;
    for (int k = 0; k < 10; ++k)
        for (int i = 0; i < 20; ++i) p.push_back(0.05 + 0.1 * k), y.push_back(i < 1 + 2 * k ? 1.0 : 0.0);
    ReliabilityCurve curve{"after", reliability_curve(p, y, 10), {{200, 30, 40}}};
    write_reliability_plot(path, {curve}, 240);

    std::ifstream f(path, std::ios::binary | std::ios::ate);
    std::string png(std::size_t(f.tellg()), '\0');
    f.seekg(0);
    f.read(&png[0], std::streamsize(png.size()));
    REQUIRE(png.size() > 8);
    CHECK(png.compare(0, 8, std::string("\x89PNG\r\n\x1a\n", 8)) == 0);
    std::size_t at = 8;
    std::string idat, text;
    std::uint32_t width = 0, height = 0;
    while (at + 12 <= png.size()) {
        const std::uint32_t len = get_u32(png, at);
        const std::string type = png.substr(at + 4, 4), body = png.substr(at + 4, 4 + len);
        CHECK(get_u32(png, at + 8 + len) == std::uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size()))));
        const std::string data = png.substr(at + 8, len);
        if (type == "IHDR") width = get_u32(data, 0), height = get_u32(data, 4);
        if (type == "IDAT") idat += data;
        if (type == "tEXt") text = data;
        at += 12 + len;
    }
    CHECK(at == png.size());
    CHECK(width == 240);
    CHECK(height == 240);
    CHECK_THAT(text, Contains("after: rgb(200,30,40)"));
    std::string raw(std::size_t(height) * (std::size_t(width) * 3 + 1), '\0');
    uLongf size = uLongf(raw.size());
    REQUIRE(uncompress(reinterpret_cast<Bytef*>(&raw[0]), &size, reinterpret_cast<const Bytef*>(idat.data()), uLong(idat.size())) == Z_OK);
    CHECK(size == raw.size());
    // The dot of bin 4 (0.45, 0.45): the plot spans [m, m + span] with m = 240 / 12 = 20, span = 200.
    const int x = 20 + 90, yy = 239 - (20 + 90);
    const std::size_t i = std::size_t(yy) * (std::size_t(width) * 3 + 1) + 1 + std::size_t(x) * 3;
    CHECK(std::uint8_t(raw[i]) == 200);
    CHECK(std::uint8_t(raw[i + 1]) == 30);
    CHECK(std::uint8_t(raw[i + 2]) == 40);
    // Far from every curve and grid line: white.
    const std::size_t corner = std::size_t(5) * (std::size_t(width) * 3 + 1) + 1 + std::size_t(235) * 3;
    CHECK(std::uint8_t(raw[corner]) == 255);
}

TEST_CASE("write_reliability_plot: bad sizes and unwritable paths are refused", "[calibration][plot][errors]") {
    CHECK_THROWS_WITH(write_reliability_plot("/tmp/x.png", {}, 50), Contains("size must be in [100, 4000], got 50"));
    CHECK_THROWS_AS(write_reliability_plot("/nonexistent-dir/plot.png", {}), io_error);
}

TEST_CASE("write_line_plot: curves on axes from the data; bad curves refused", "[plot]") {
    testing::TempDir dir("line_plot");
    const std::string path = dir.file("curve.png");
    LineCurve a{"dense", {0, 1, 2}, {3.0, 2.5, 2.0}, {{200, 30, 40}}}, b{"moe", {0, 2}, {3.0, 1.0}, {{31, 119, 180}}};
    write_line_plot(path, {a, b}, "seconds", "bits/char", 240, 120);
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    std::string png(std::size_t(f.tellg()), '\0');
    f.seekg(0);
    f.read(&png[0], std::streamsize(png.size()));
    CHECK(png.compare(0, 8, std::string("\x89PNG\r\n\x1a\n", 8)) == 0);
    CHECK(png.find("dense: rgb(200,30,40)") != std::string::npos);
    CHECK(png.find("y bits/char from 1 to 3") != std::string::npos);
    LineCurve bad{"bad", {0, 1}, {1.0}, {{0, 0, 0}}};
    CHECK_THROWS_WITH(write_line_plot(path, {bad}, "x", "y"), Contains("curve 'bad' has 2 x values and 1 y values"));
    bad.y = {1.0, std::nan("")};
    CHECK_THROWS_WITH(write_line_plot(path, {bad}, "x", "y"), Contains("point 1 is not finite"));
    CHECK_THROWS_WITH(write_line_plot(path, {a}, "x", "y", 50, 400), Contains("size must be in [100, 4000]"));
}

}  // namespace test_reliability_plot
