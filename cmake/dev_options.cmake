# moe_dev: a private INTERFACE target for the project's own tests, examples and benchmarks.
# Consumers of moe::moe never see these flags.
add_library(moe_dev INTERFACE)
target_link_libraries(moe_dev INTERFACE moe::moe moe::data)
if(MOE_BLAS)
  target_link_libraries(moe_dev INTERFACE moe::blas)  # tests, examples and benchmarks on the BLAS backend
endif()

option(MOE_WARNINGS_AS_ERRORS "Treat compiler warnings as errors in tests/examples/benchmarks" OFF)
set(MOE_SANITIZERS "" CACHE STRING "Sanitizers for tests/examples (e.g. address,undefined)")
option(MOE_NATIVE "Compile tests/examples/benchmarks with -march=native" OFF)

# -march=native, and for g++ -Wno-maybe-uninitialized with it: g++ 12 warns about its own AVX-512
# intrinsics (the `__m512d __Y = __Y;` idiom of avx512fintrin.h) once they are inlined into Eigen's
# GEBP kernel, a false positive that -Werror would turn into a failed build.
set(MOE_NATIVE_FLAGS -march=native)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  list(APPEND MOE_NATIVE_FLAGS -Wno-maybe-uninitialized)
endif()

if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(moe_dev INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion
    -Wnon-virtual-dtor -Wold-style-cast -Woverloaded-virtual -Wnull-dereference)
  if(MOE_WARNINGS_AS_ERRORS)
    target_compile_options(moe_dev INTERFACE -Werror)
  endif()
  if(MOE_SANITIZERS)
    target_compile_options(moe_dev INTERFACE -fsanitize=${MOE_SANITIZERS} -fno-omit-frame-pointer -fno-sanitize-recover=all)
    target_link_options(moe_dev INTERFACE -fsanitize=${MOE_SANITIZERS})
  endif()
  if(MOE_NATIVE)
    target_compile_options(moe_dev INTERFACE ${MOE_NATIVE_FLAGS})
  endif()
endif()
