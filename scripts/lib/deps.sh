# Shared by scripts/demo, scripts/test and scripts/bench: install the Debian packages the build
# needs, only those missing. Safe to run twice. apt-get update runs once, before the first install.
# Uses sudo only when not root.

moe_apt() {
  if [ "$(id -u)" -eq 0 ]; then apt-get "$@"; else sudo apt-get "$@"; fi
}

# moe_ensure_packages pkg... : installs the missing ones.
moe_ensure_packages() {
  local missing=()
  local p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  echo "moe: installing missing Debian packages: ${missing[*]}"
  moe_apt update -qq
  DEBIAN_FRONTEND=noninteractive moe_apt install -y -qq --no-install-recommends "${missing[@]}"
}

# What building the library, its tests, examples and benchmarks needs.
# Open MPI for moe::mpi (data-parallel training) and its 2-rank tests; fortunes: the text of the
# char-LM example (examples/char_lm.cpp); yaml-cpp and CLI11 for moe::graph and the moe-graph tool.
MOE_BUILD_PACKAGES=(g++ cmake ninja-build pkg-config libeigen3-dev nlohmann-json3-dev zlib1g-dev catch2 libbenchmark-dev
                    libopenblas-openmp-dev libblis-serial-dev libopenmpi-dev openmpi-bin fortunes libyaml-cpp-dev libcli11-dev)
# The BLAS backends (moe::blas): OpenBLAS's OpenMP build (its serial build races when moe calls it from
# several threads; moe sets its thread count to 1) and BLIS's serial build (CMakeLists.txt says why).
MOE_BLAS_PACKAGES=(libopenblas-openmp-dev libblis-serial-dev)

moe_jobs() {
  nproc 2>/dev/null || echo 2
}
