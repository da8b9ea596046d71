// Model files: bitwise round trips of every model kind in both dtypes, optimizer state and a resumed
// run, dtype conversion, atomic saving under a failing write, every bad-file case of
// docs/model_files.md, and files shared with PyTorch both ways. (test_model_file_compat.cpp: sizes,
// strict configs, old files, evaluation mode, one's own PyTorch state_dicts.)
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/resource.h>

#include "support/catch.hpp"
#include "support/fixtures.hpp"
#include "support/model_files.hpp"

// Everything below in the file's own namespace: the tests are compiled as one program (unity build).
namespace test_model_file {

using namespace moe;
using Catch::Matchers::Contains;
using namespace moe::testing;


TEST_CASE("Model files: save then load is bitwise, for every model kind and both dtypes", "[io][model_file]") {
    TempDir dir("model_file_round_trip");
    check_round_trip<MMoE<float>>(mmoe_spec(), dir.file("mmoe32.safetensors"));
    check_round_trip<MMoE<double>>(mmoe_spec(), dir.file("mmoe64.safetensors"));
    check_round_trip<OMoE<float>>(mmoe_spec(true), dir.file("omoe32.safetensors"));
    check_round_trip<OMoE<double>>(mmoe_spec(true), dir.file("omoe64.safetensors"));
    check_round_trip<SharedBottom<float>>(bottom_spec(), dir.file("sb32.safetensors"));
    check_round_trip<SharedBottom<double>>(bottom_spec(), dir.file("sb64.safetensors"));
    check_round_trip<PLE<float>>(ple_spec(2), dir.file("ple32.safetensors"));
    check_round_trip<PLE<double>>(ple_spec(2), dir.file("ple64.safetensors"));
    check_round_trip<CGC<float>>(ple_spec(1), dir.file("cgc32.safetensors"));
    check_round_trip<CGC<double>>(ple_spec(1), dir.file("cgc64.safetensors"));
    check_round_trip<SparseMMoE<float>>(sparse_mmoe_spec(), dir.file("smmoe32.safetensors"));
    check_round_trip<SparseMMoE<double>>(sparse_mmoe_spec(), dir.file("smmoe64.safetensors"));
    MMoESpec dselect = mmoe_spec();
    dselect.gate_hidden = {};
    dselect.gate = GateKind::dselect_k;
    check_round_trip<MMoE<float>>(dselect, dir.file("dselect32.safetensors"));

    // SparseMoE is a layer (d x N in and out): compare its outputs directly.
    SparseMoESpec ss;
    ss.dim = 6;
    ss.ffn = 8;
    ss.experts = 4;
    ss.k = 2;
    ss.router_bias = true;
    Model<SparseMoE<double>> layer(ss, 2);
    save(layer, dir.file("sparse.safetensors"));
    Model<SparseMoE<double>> back = load<SparseMoE<double>>(dir.file("sparse.safetensors"));
    CHECK(back.params().values() == layer.params().values());
    const Matrix<double> x = random_matrix(6, 10, 4);
    layer.eval();
    back.eval();
    CHECK(Matrix<double>(layer.forward(x)) == Matrix<double>(back.forward(x)));
}

TEST_CASE("Model files: tensor names, shapes and BatchNorm buffers as PyTorch's state_dict", "[io][model_file]") {
    TempDir dir("model_file_names");
    const SafetensorsFile f = saved_mmoe(dir.file("m.safetensors"));
    CHECK(f.at("experts.0.0.weight").shape == std::vector<std::int64_t>{5, 6});
    CHECK(f.at("experts.0.0.bias").shape == std::vector<std::int64_t>{5});
    CHECK(f.at("experts.2.2.weight").shape == std::vector<std::int64_t>{5});  // BatchNorm1d affine
    CHECK(f.at("experts.2.2.running_var").shape == std::vector<std::int64_t>{5});
    CHECK(f.at("experts.1.2.num_batches_tracked").dtype == DType::i64);
    CHECK(f.at("experts.1.2.num_batches_tracked").values<double>()[0] == 2.0);  // two training steps
    CHECK(f.at("towers.0.2.running_mean").shape == std::vector<std::int64_t>{3});
    CHECK(f.at("gates.1.0.weight").shape == std::vector<std::int64_t>{3, 6});
    CHECK(f.metadata.at("kind") == "mmoe");
    CHECK(f.metadata.at("dtype") == "float64");
    CHECK_FALSE(f.contains("optimizer.step"));
}

TEST_CASE("Model files: the optimizer state resumes a run bit for bit", "[io][model_file]") {
    TempDir dir("model_file_resume");
    PLESpec s = ple_spec(2);
    Model<PLE<float>> straight(s, 4);
    Adam<float> adam_straight(AdamOptions{2e-3});
    train_a_little(straight, adam_straight, 6, 8);  // 6 steps in one go

    Model<PLE<float>> first(s, 4);
    Adam<float> adam_first(AdamOptions{2e-3});
    train_a_little(first, adam_first, 3, 8);
    save(first, dir.file("half.safetensors"), &adam_first);
    Adam<float> adam_resumed(AdamOptions{2e-3});
    Model<PLE<float>> resumed = load<PLE<float>>(dir.file("half.safetensors"), {}, &adam_resumed);
    CHECK(adam_resumed.step_count() == 3);
    train_a_little(resumed, adam_resumed, 3, 8);
    CHECK(resumed.params().values() == straight.params().values());
    // Without the optimizer state the resumed run differs (Adam restarts its moments).
    Adam<float> fresh(AdamOptions{2e-3});
    Model<PLE<float>> restarted = load<PLE<float>>(dir.file("half.safetensors"));
    train_a_little(restarted, fresh, 3, 8);
    CHECK(restarted.params().values() != straight.params().values());
    // A file saved without optimizer state cannot fill one.
    save(first, dir.file("no_opt.safetensors"));
    Adam<float> wanting;
    CHECK_THROWS_WITH(load<PLE<float>>(dir.file("no_opt.safetensors"), {}, &wanting), Contains("holds no optimizer state"));
}

TEST_CASE("Model files: dtype conversion on request", "[io][model_file]") {
    TempDir dir("model_file_dtype");
    Model<MMoE<double>> m64(mmoe_spec(), 2);
    save(m64, dir.file("m64.safetensors"));
    CHECK_THROWS_WITH(load<MMoE<float>>(dir.file("m64.safetensors")),
                      Contains("holds a float64 model, loading a float32 one") && Contains("convert_dtype"));
    LoadOptions convert;
    convert.convert_dtype = true;
    const Model<MMoE<float>> m32 = load<MMoE<float>>(dir.file("m64.safetensors"), convert);
    CHECK(m32.params().values() == m64.params().values().cast<float>());
}

TEST_CASE("Model files: a failing write leaves the previous file intact and no temporary file", "[io][model_file]") {
    TempDir dir("model_file_atomic");
    const std::string path = dir.file("model.safetensors");
    Model<MMoE<double>> small(mmoe_spec(), 1);
    save(small, path);
    const std::string before = read_bytes(path);
    MMoESpec big_spec = mmoe_spec();
    big_spec.expert_hidden = {512};
    Model<MMoE<double>> big(big_spec, 2);
    // Let the kernel refuse writes past 4 KB (EFBIG), as a full disk would refuse them midway.
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit old{};
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    rlimit limited = old;
    limited.rlim_cur = 4096;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &limited) == 0);
    std::string error;
    try {
        save(big, path);
    } catch (const io_error& e) {
        error = e.what();
    }
    REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
    std::signal(SIGXFSZ, SIG_DFL);
    CHECK_THAT(error, Contains("model.safetensors") && Contains("failed") && Contains("previous file"));
    CHECK(read_bytes(path) == before);
    CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
    CHECK(load<MMoE<double>>(path).params().values() == small.params().values());
    // And the same save succeeds once the disk has room.
    save(big, path);
    CHECK(load<MMoE<double>>(path).params().values() == big.params().values());
}

TEST_CASE("Model files: every bad file gives io_error naming the file and what was expected", "[io][model_file][errors]") {
    TempDir dir("model_file_bad");
    const std::string good_path = dir.file("good.safetensors");
    const SafetensorsFile good = saved_mmoe(good_path);
    const std::string bytes = read_bytes(good_path);
    using M = MMoE<double>;
    auto bad_file = [&](const std::string& name, const std::function<void(SafetensorsFile&)>& edit) {
        SafetensorsFile f = good;
        edit(f);
        write_safetensors(dir.file(name), f);
        return dir.file(name);
    };
    auto bad_bytes = [&](const std::string& name, const std::string& b) {
        write_bytes(dir.file(name), b);
        return dir.file(name);
    };
    auto header_len = [&] {
        std::uint64_t n = 0;
        for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[std::size_t(i)]);
        return n;
    }();
    auto with_header = [&](std::string h) {  // bytes with another header, same data
        std::string out(8, '\0');
        for (int i = 0; i < 8; ++i) out[std::size_t(i)] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
        return out + h + bytes.substr(8 + header_len);
    };
    const std::string header = bytes.substr(8, header_len);

    struct Case {
        std::string what, path, expected;
    };
    std::vector<Case> cases = {
        {"empty file", bad_bytes("empty", ""), "too short for a safetensors header"},
        {"a directory", dir.path.string(), "is it a directory"},
        {"truncated in the length", bad_bytes("trunc4", bytes.substr(0, 4)), "too short"},
        {"truncated in the header", bad_bytes("trunc_header", bytes.substr(0, 8 + header_len / 2)), "runs past the end"},
        {"truncated in the data", bad_bytes("trunc_data", bytes.substr(0, bytes.size() - 100)), "outside the data section"},
        {"one byte short", bad_bytes("trunc_1", bytes.substr(0, bytes.size() - 1)), "outside the data section"},
        {"header length past the end", bad_bytes("len", std::string("\xff\xff\xff\xff\x00\x00\x00\x00", 8) + bytes.substr(8)),
         "runs past the end of the file"},
        {"bad JSON", bad_bytes("bad_json", with_header(std::string(header).replace(0, 1, "["))), "not valid JSON"},
        {"overlapping offsets", [&] {
             // Give the second tensor in the file the first one's range.
             nlohmann::json j = nlohmann::json::parse(header);
             std::string first, second;
             for (auto it = j.begin(); it != j.end(); ++it)
                 if (it.key() != "__metadata__" && it.value()["data_offsets"][0] == 0) first = it.key();
             const auto first_end = j[first]["data_offsets"][1];
             for (auto it = j.begin(); it != j.end(); ++it)
                 if (it.key() != "__metadata__" && it.value()["data_offsets"][0] == first_end) second = it.key();
             j[second]["data_offsets"] = j[first]["data_offsets"];
             j[second]["shape"] = j[first]["shape"];
             return bad_bytes("overlap", with_header(j.dump()));
         }(), "overlap or leave a gap"},
        {"unknown dtype", [&] {
             nlohmann::json j = nlohmann::json::parse(header);
             j["gates.0.0.bias"]["dtype"] = "BF16";
             return bad_bytes("bf16", with_header(j.dump()));
         }(), "has dtype 'BF16'"},
        {"wrong dtype (float32 for a float64 model)", bad_file("f32", [](SafetensorsFile& f) {
             f.tensors["gates.0.0.bias"] = Tensor::from_matrix<float>(Matrix<float>::Zero(3, 1));
             f.tensors["gates.0.0.bias"].shape = {3};
         }), "the metadata says float64 but tensor 'gates.0.0.bias' is F32"},
        {"wrong shape", bad_file("shape", [](SafetensorsFile& f) {
             f.tensors["towers.1.0.weight"] = Tensor::from_matrix<double>(Matrix<double>::Zero(3, 5));
         }), "'towers.1.0.weight' has shape [3, 5], the model needs [3, 4]"},
        {"missing tensor", bad_file("missing", [](SafetensorsFile& f) { f.tensors.erase("experts.1.0.weight"); }),
         "'experts.1.0.weight' is missing (the file holds"},
        {"missing BatchNorm statistics", bad_file("missing_bn", [](SafetensorsFile& f) { f.tensors.erase("experts.0.2.running_var"); }),
         "'experts.0.2.running_var' is missing"},
        {"extra tensor", bad_file("extra", [](SafetensorsFile& f) {
             f.tensors["experts.9.0.weight"] = Tensor::from_matrix<double>(Matrix<double>::Zero(5, 6));
         }), "'experts.9.0.weight' is not part of this mmoe"},
        {"NaN weight", bad_file("nan", [](SafetensorsFile& f) {
             Matrix<double> w = f.at("experts.0.0.weight").matrix<double>();
             w(1, 2) = std::nan("");
             f.tensors["experts.0.0.weight"] = Tensor::from_matrix<double>(w);
         }), "'experts.0.0.weight' holds a non-finite value"},
        {"config contradicts the tensors", bad_file("config", [](SafetensorsFile& f) {
             auto c = nlohmann::json::parse(f.metadata.at("config"));
             c["experts"] = 4;
             f.metadata["config"] = c.dump();
         }), "'experts.3.0.bias' is missing"},
        {"a config that would allocate far more than the file holds", bad_file("config_huge", [](SafetensorsFile& f) {
             auto c = nlohmann::json::parse(f.metadata.at("config"));
             c["expert_hidden"] = {1000000000};
             f.metadata["config"] = c.dump();
         }), "the config describes a model of 45000000218 values"},
        {"config field of the wrong type", bad_file("config_type", [](SafetensorsFile& f) {
             f.metadata["config"] = "{\"input\": 6, \"experts\": \"three\"}";
         }), "config.experts: expected an integer, got string \"three\""},
        {"config with an unknown field", bad_file("config_unknown", [](SafetensorsFile& f) {
             auto c = nlohmann::json::parse(f.metadata.at("config"));
             c["expertz"] = 3;
             f.metadata["config"] = c.dump();
         }), "config: unknown field 'expertz' (the fields are "},
        {"config that is not JSON", bad_file("config_json", [](SafetensorsFile& f) { f.metadata["config"] = "{input: 6"; }),
         "config is not valid JSON"},
        {"config describes an invalid model", bad_file("config_invalid", [](SafetensorsFile& f) {
             auto c = nlohmann::json::parse(f.metadata.at("config"));
             c["experts"] = 0;
             f.metadata["config"] = c.dump();
         }), "experts must be positive, got 0"},
        {"another model kind", bad_file("kind", [](SafetensorsFile& f) { f.metadata["kind"] = "ple"; }),
         "holds a 'ple' model, loading a 'mmoe'"},
        {"not a model file (no metadata)", bad_file("plain", [](SafetensorsFile& f) { f.metadata.clear(); }),
         "the metadata has no 'format'"},
        {"a newer format version", bad_file("version", [](SafetensorsFile& f) { f.metadata["version"] = "2"; }),
         "format version 2, this library reads version 1"},
        {"an unknown dtype in the metadata", bad_file("meta_dtype", [](SafetensorsFile& f) { f.metadata["dtype"] = "bfloat16"; }),
         "dtype is 'bfloat16', expected float32 or float64"},
        {"metadata dtype that contradicts the tensors", bad_file("meta_dtype2", [](SafetensorsFile& f) { f.metadata["dtype"] = "float32"; }),
         "the metadata says float32 but tensor"},
        {"a dimension above INT64_MAX", [&] {
             nlohmann::json j = nlohmann::json::parse(header);
             j["gates.0.0.bias"]["shape"] = {std::uint64_t(1) << 63};
             return bad_bytes("dim_huge", with_header(j.dump()));
         }(), "has a dimension of 9223372036854775808, above the largest index"},
        {"an element count that overflows 64 bits", [&] {
             nlohmann::json j = nlohmann::json::parse(header);
             j["gates.0.0.bias"]["shape"] = {std::uint64_t(1) << 40, std::uint64_t(1) << 40};
             return bad_bytes("numel_wrap", with_header(j.dump()));
         }(), "whose element count overflows 64 bits"},
        {"a byte count that wraps to the data's size", [&] {
             // 2^62 float32 values are 2^64 bytes, 0 modulo 2^64: once accepted as an empty tensor.
             nlohmann::json j = nlohmann::json::parse(header);
             const std::string name = "optimizer.zero";
             j[name] = {{"dtype", "F32"}, {"shape", {std::uint64_t(1) << 62}}, {"data_offsets", {0, 0}}};
             return bad_bytes("bytes_wrap", with_header(j.dump()));
         }(), "whose byte count overflows 64 bits"},
        {"a tensor named twice", [&] {
             std::string h = header;
             const std::string entry = "\"gates.0.0.bias\":";
             const auto at = h.find(entry);
             const auto end = h.find('}', at) + 1;
             h.insert(1, h.substr(at, end - at) + ",");  // the same entry again, first in the object
             return bad_bytes("duplicate", with_header(h));
         }(), "the header names 'gates.0.0.bias' twice in one object"},
        {"num_batches_tracked as a float", bad_file("count", [](SafetensorsFile& f) {
             f.tensors["towers.0.2.num_batches_tracked"] = Tensor::from_matrix<double>(Matrix<double>::Zero(1, 1));
             f.tensors["towers.0.2.num_batches_tracked"].shape = {};
         }), "'towers.0.2.num_batches_tracked' has dtype F64, expected I64"},
    };
    for (const auto& c : cases) {
        INFO(c.what);
        std::string error;
        try {
            load<M>(c.path);
        } catch (const io_error& e) {
            error = e.what();
        }
        CHECK_THAT(error, Contains(c.expected));
        if (c.path != dir.path.string()) CHECK_THAT(error, Contains(fs::path(c.path).filename().string()));
    }
    // The documented escapes: non-strict ignores extra tensors, check_finite = false takes NaN.
    LoadOptions lenient;
    lenient.strict = false;
    CHECK_NOTHROW(load<M>(dir.file("extra"), lenient));
    lenient.check_finite = false;
    CHECK(std::isnan(load<M>(dir.file("nan"), lenient).params().value("experts.0.0.weight")(1, 2)));
    CHECK_THROWS_WITH(load<M>(dir.file("nowhere.safetensors")), Contains("nowhere.safetensors: cannot open"));
}

namespace {
template <class M>
void check_torch_fixture(const std::string& kind) {
    using T = typename M::Scalar;
    const std::string base = moe::testing::fixture_path("torch_" + kind + (std::is_same_v<T, double> ? "_f64" : "_f32"));
    INFO(base);
    const Model<M> model = load<M>(base + ".safetensors");
    const SafetensorsFile io = read_safetensors(base + "_io.safetensors");
    const Matrix<T> x = io.at("x").template batch<T>();
    InferenceWorkspace<T> ws;
    const auto& pred = model.predict(x, ws);
    REQUIRE(pred.size() == model.tasks().size());
    for (std::size_t t = 0; t < pred.size(); ++t)
        MOE_CHECK_CLOSE(Matrix<T>(pred[t]), io.at("pred." + std::to_string(t)).template batch<T>(), T);
}
}  // namespace

TEMPLATE_TEST_CASE("Model files: models trained and exported by PyTorch load here and predict the same",
                   "[io][model_file][parity]", float, double) {
    check_torch_fixture<MMoE<TestType>>("mmoe");
    check_torch_fixture<OMoE<TestType>>("omoe");
    check_torch_fixture<SharedBottom<TestType>>("shared_bottom");
    check_torch_fixture<PLE<TestType>>("ple");
    check_torch_fixture<CGC<TestType>>("cgc");
    check_torch_fixture<SparseMMoE<TestType>>("sparse_mmoe");
    // SparseMoE is a layer: its evaluation-mode output against PyTorch's.
    const std::string base = moe::testing::fixture_path(std::string("torch_sparse_moe_") + (std::is_same_v<TestType, double> ? "f64" : "f32"));
    Model<SparseMoE<TestType>> layer = load<SparseMoE<TestType>>(base + ".safetensors");
    layer.eval();
    const SafetensorsFile io = read_safetensors(base + "_io.safetensors");
    const Matrix<TestType> x = io.at("x").template batch<TestType>();
    MOE_CHECK_CLOSE(Matrix<TestType>(layer.forward(x)), io.at("pred.0").template batch<TestType>(), TestType);
}

TEST_CASE("Model files: PyTorch reads the files saved here and predicts the same", "[io][model_file][parity]") {
    const std::string tool = std::string(MOE_FIXTURE_DIR) + "/../../tools/export_pytorch.py";
    if (std::system("/usr/bin/python3 -c 'import torch' > /dev/null 2>&1") != 0) {
        WARN("skipped: /usr/bin/python3 cannot import torch (Debian's python3-torch); tools/export_pytorch.py check "
             "is the same comparison by hand");
        return;
    }
    TempDir dir("model_file_to_torch");
    auto run = [&](auto& model, const std::string& name) {
        using T = typename std::decay_t<decltype(model)>::Scalar;
        Adam<T> adam;
        train_a_little(model, adam, 4, 6);
        const std::string path = dir.file(name + ".safetensors"), io_path = dir.file(name + "_io.safetensors");
        save(model, path);
        const Matrix<T> x = random_matrix(model.in_features(), 7, 8).template cast<T>();
        InferenceWorkspace<T> ws;
        const auto& pred = model.predict(x, ws);
        SafetensorsFile io;
        io.tensors["x"] = Tensor::from_matrix<T>(x.transpose());
        for (std::size_t t = 0; t < pred.size(); ++t)
            io.tensors["pred." + std::to_string(t)] = Tensor::from_matrix<T>(Matrix<T>(pred[t]).transpose());
        write_safetensors(io_path, io);
        const std::string cmd = "/usr/bin/python3 " + tool + " check " + path + " " + io_path;
        INFO(cmd);
        CHECK(std::system(cmd.c_str()) == 0);
    };
    Model<MMoE<double>> mmoe(mmoe_spec(), 1);
    run(mmoe, "mmoe64");
    Model<MMoE<float>> mmoe32(mmoe_spec(), 2);
    run(mmoe32, "mmoe32");
    Model<OMoE<float>> omoe(mmoe_spec(true), 3);
    run(omoe, "omoe");
    Model<SharedBottom<double>> bottom(bottom_spec(), 4);
    run(bottom, "shared_bottom");
    Model<PLE<double>> ple(ple_spec(2), 5);
    run(ple, "ple");
    Model<CGC<float>> cgc(ple_spec(1), 6);
    run(cgc, "cgc");
    Model<SparseMMoE<double>> sparse(sparse_mmoe_spec(), 7);
    run(sparse, "sparse_mmoe");
    MMoESpec dselect = mmoe_spec();
    dselect.gate_hidden = {};
    dselect.gate = GateKind::dselect_k;
    dselect.dselect_gamma = 3.0;
    dselect.dselect_entropy = 0.01;
    Model<MMoE<float>> dselect_model(dselect, 9);
    run(dselect_model, "mmoe_dselect");
    SparseMoESpec ls;
    ls.dim = 6;
    ls.ffn = 8;
    ls.experts = 4;
    ls.k = 2;
    ls.router_bias = true;
    Model<SparseMoE<double>> layer(ls, 8);
    layer.eval();
    const std::string path = dir.file("sparse_moe.safetensors"), io_path = dir.file("sparse_moe_io.safetensors");
    save(layer, path);
    const Matrix<double> x = random_matrix(6, 9, 3);
    SafetensorsFile io;
    io.tensors["x"] = Tensor::from_matrix<double>(x.transpose());
    io.tensors["pred.0"] = Tensor::from_matrix<double>(Matrix<double>(layer.forward(x)).transpose());
    write_safetensors(io_path, io);
    CHECK(std::system(("/usr/bin/python3 " + tool + " check " + path + " " + io_path).c_str()) == 0);
}

}  // namespace test_model_file
