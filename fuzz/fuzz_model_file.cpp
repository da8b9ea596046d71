// libFuzzer target for the model-file loader: any bytes must give a model or moe::io_error, never a
// crash, a sanitizer report, another exception, or a huge allocation. The loader reads paths, so each
// input is written to one file in /dev/shm (memory) first. Built by the fuzz preset; run by scripts/fuzz.
#include <moe/io/feature_model_file.hpp>
#include <moe/io/model_file.hpp>

#include <cstdint>
#include <cstdio>
#include <string>

#include <unistd.h>

namespace {
const std::string& input_path() {
    static const std::string path = "/dev/shm/moe_fuzz_" + std::to_string(getpid()) + ".safetensors";
    return path;
}

template <class M>
void try_load(const moe::LoadOptions& options) {
    try {
        moe::Adam<typename M::Scalar> adam;
        moe::load<M>(input_path(), options, &adam);
    } catch (const moe::io_error&) {
    }
    try {
        moe::load<M>(input_path(), options);
    } catch (const moe::io_error&) {
    }
}

/// A model with ID features: the features' JSON and the tables are read too.
template <class Net>
void try_load_features(const moe::LoadOptions& options) {
    try {
        moe::Adam<typename Net::Scalar> adam;
        moe::load_feature_model<Net>(input_path(), options, &adam);
    } catch (const moe::io_error&) {
    }
}

/// Every tensor the reader accepts must be readable as values and, at rank <= 2, as a matrix: a
/// shape whose product overflows, or a dimension past INT64_MAX, would show here (an allocation or
/// an Eigen assertion) even when no model asks for that tensor.
void read_every_tensor() {
    try {
        const moe::SafetensorsFile file = moe::read_safetensors(input_path());
        for (const auto& [name, t] : file.tensors) {
            (void)name;
            const auto values = t.values<double>();
            if (values.size() != t.bytes.size() / moe::dtype_size(t.dtype)) __builtin_trap();
            if (t.shape.size() <= 2) (void)t.matrix<float>();
            if (t.shape.size() == 2) (void)t.batch<double>();
        }
    } catch (const moe::io_error&) {
    }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::FILE* f = std::fopen(input_path().c_str(), "wb");
    if (!f) return 0;
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
    read_every_tensor();
    moe::LoadOptions lenient;
    lenient.strict = false;
    lenient.convert_dtype = true;
    lenient.check_finite = false;
    try_load<moe::MMoE<double>>({});
    try_load<moe::MMoE<float>>(lenient);
    try_load<moe::PLE<double>>({});
    try_load<moe::SharedBottom<float>>(lenient);
    try_load<moe::SparseMoE<double>>({});
    try_load_features<moe::MMoE<double>>({});
    try_load_features<moe::MMoE<float>>(lenient);
    return 0;
}
