#!/usr/bin/env bash
# Every public header compiles on its own: it includes what it uses, whatever a program includes
# before it. (embedding_bag.hpp once used ConstView without including core/view.hpp, and compiled
# only where something else had included it first.) Syntax only, two at a time.
# Usage: check_headers.sh <c++ compiler> <include dir> <extra compiler flags...>
# MOE_SKIP_MPI_HEADERS=1 leaves out moe/mpi/ (a build without MPI has no mpi.h), MOE_SKIP_GRAPH_HEADERS=1
# moe/graph/ (a build without yaml-cpp).
set -euo pipefail
cxx=$1 include=$2
shift 2
cd "$include"
headers() {
  local skip=()
  [ "${MOE_SKIP_MPI_HEADERS:-0}" = 1 ] && skip+=(-not -path 'moe/mpi/*')
  [ "${MOE_SKIP_GRAPH_HEADERS:-0}" = 1 ] && skip+=(-not -path 'moe/graph/*')
  find moe -name '*.hpp' ${skip[@]+"${skip[@]}"}
}
headers | sort | xargs -P 2 -I{} sh -c '
  header=$1
  shift
  printf "#include \"%s\"\n" "$header" | "$0" -std=c++17 -fsyntax-only -fopenmp -I . "$@" -x c++ - ||
    { echo "header does not compile on its own: $header" >&2; exit 255; }' "$cxx" {} "$@"
echo "$(headers | wc -l) headers compile on their own"
