// The safetensors reader: a good file, and bad files that must give io_error naming the file.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "support/catch.hpp"
#include "support/fixtures.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_safetensors {

using namespace moe;

namespace {
std::string temp_path(const std::string& name) {
    return (std::filesystem::temp_directory_path() / ("moe_test_" + name)).string();
}
std::string write_file(const std::string& name, const std::string& header, const std::string& data) {
    const std::string path = temp_path(name);
    std::ofstream f(path, std::ios::binary);
    std::uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
    f << header << data;
    return path;
}
}  // namespace

TEST_CASE("safetensors: reads the shared MMoE reference case", "[io]") {
    const std::string path = std::string(MOE_SHARED_DIR) + "/reference/tiny_f64.safetensors";
    if (!std::filesystem::exists(path)) {
        WARN("skipped: " << path << " is not present");
        return;
    }
    const auto f = read_safetensors(path);
    CHECK(f.at("experts.0.0.weight").shape == std::vector<std::int64_t>{16, 8});
    CHECK(f.at("input.x").template batch<double>().rows() == 8);
    CHECK(f.metadata.count("config") == 1);
}

TEST_CASE("safetensors: values and shapes of a written file", "[io]") {
    const std::string data(4 * 6, '\0');
    std::string bytes(24, '\0');
    for (int i = 0; i < 6; ++i) {
        const float v = float(i);
        std::memcpy(&bytes[std::size_t(4 * i)], &v, 4);
    }
    const auto path = write_file("good.safetensors",
                                 R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"__metadata__":{"k":"v"}})", bytes);
    const auto f = read_safetensors(path);
    const Matrix<double> m = f.at("w").matrix<double>();
    CHECK(m.rows() == 2);
    CHECK(m(1, 0) == 3.0);  // row-major (2, 3) as a 2 x 3 matrix
    CHECK(f.metadata.at("k") == "v");
    std::remove(path.c_str());
}

TEST_CASE("safetensors: bad files give io_error with the file and the reason", "[io][errors]") {
    const std::string ok_header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    struct Case {
        const char* name;
        std::string header, data, expected;
    };
    const std::vector<Case> cases = {
        {"bad_json", "{not json", "", "header is not valid JSON"},
        {"not_object", "[1,2]", "", "header is not a JSON object"},
        {"bad_dtype", R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})", std::string(4, '\0'),
         "tensor 'w' has dtype 'BF16'"},
        {"short_data", ok_header, std::string(4, '\0'), "outside the data section of 4 bytes"},
        {"size_mismatch", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'),
         "tensor 'w' has 8 bytes, its shape and dtype need 12"},
        {"overlap",
         R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
         std::string(12, '\0'), "tensors overlap or leave a gap"},
        {"extra_bytes", ok_header, std::string(12, '\0'), "the tensors cover 8 bytes of data, the file holds 12"},
        {"huge_shape", R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
         std::string(8, '\0'), "whose element count overflows 64 bits"},
        {"large_shape", R"({"w":{"dtype":"F64","shape":[1048576,1048576],"data_offsets":[0,8]}})",
         std::string(8, '\0'), "tensor 'w' has 8 bytes, its shape and dtype need 8796093022208"},
        {"negative_shape", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", "",
         "shape entry that is not a non-negative integer"},
    };
    for (const auto& c : cases) {
        INFO(c.name);
        const auto path = write_file(std::string(c.name) + ".safetensors", c.header, c.data);
        CHECK_THROWS_AS(read_safetensors(path), io_error);
        CHECK_THROWS_WITH(read_safetensors(path), Catch::Matchers::Contains(path) && Catch::Matchers::Contains(c.expected));
        std::remove(path.c_str());
    }
    // Header length past the end of the file.
    {
        const std::string path = temp_path("len_past_end.safetensors");
        std::ofstream f(path, std::ios::binary);
        const char len[8] = {char(0xff), char(0xff), 0, 0, 0, 0, 0, 0};
        f.write(len, 8);
        f << "{}";
        f.close();
        CHECK_THROWS_WITH(read_safetensors(path), Catch::Matchers::Contains("runs past the end of the file"));
        std::remove(path.c_str());
    }
    // Empty file, missing file, directory.
    {
        const std::string path = temp_path("empty.safetensors");
        std::ofstream(path, std::ios::binary).close();
        CHECK_THROWS_WITH(read_safetensors(path), Catch::Matchers::Contains("too short"));
        std::remove(path.c_str());
    }
    CHECK_THROWS_WITH(read_safetensors(temp_path("does_not_exist")), Catch::Matchers::Contains("cannot open"));
    CHECK_THROWS_AS(read_safetensors(std::filesystem::temp_directory_path().string()), io_error);
}

}  // namespace test_safetensors
