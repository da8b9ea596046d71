#pragma once
// Which wider instruction set a hot loop may use at run time, beyond what the build was compiled for.
//
// Eigen picks its SIMD width when the code is compiled (-march): a portable build (no -march) gets
// SSE2 everywhere, a quarter of AVX-512's width. The GEMMs of a BLAS backend choose their kernel at
// run time anyway, so in such a build the few loops that are not GEMMs and that Eigen cannot help
// (the Adam update is the one that shows: 27% of a batch-32 training step's instructions in a
// portable build) carry a second version compiled with __attribute__((target)) and are chosen by
// the CPU they run on, once per process. A build that already has the instruction set (-march
// native) takes its own compiled code: nothing to gain there.
//
// Only GCC and Clang on x86-64 (ELF or not: no ifunc is used, just __builtin_cpu_supports);
// elsewhere, or with MOE_NO_SIMD_DISPATCH defined, every loop runs as compiled. The choice is one
// per process, so it never depends on the thread count (same bits on any number of threads).

namespace moe::detail {

/// Instruction sets a dispatched loop may use beyond the build's: none, AVX2 with FMA, AVX-512F.
enum class SimdLevel { compiled, avx2, avx512 };

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(MOE_NO_SIMD_DISPATCH)
#define MOE_SIMD_DISPATCH 1
#endif

inline SimdLevel detect_simd_level() {
#ifdef MOE_SIMD_DISPATCH
#ifndef __AVX512F__
    if (__builtin_cpu_supports("avx512f")) return SimdLevel::avx512;
#endif
#if !defined(__AVX2__) || !defined(__FMA__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SimdLevel::avx2;
#endif
#endif
    return SimdLevel::compiled;
}

/// The level of this process, decided once.
inline SimdLevel simd_level() {
    static const SimdLevel level = detect_simd_level();
    return level;
}

}  // namespace moe::detail
