#!/bin/sh
# moe-graph from end to end (ctest moe_graph_cli): toy data, train, predict, export; then a data
# file without a column of the model, which must fail naming the column.
# Usage: graph_cli.sh path/to/moe-graph model.yaml
set -e
tool=$1
yaml=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$tool" toy-data --rows 3000 --out "$dir/train.csv"
"$tool" train "$yaml" --data "$dir/train.csv" --epochs 2 --out "$dir/m.safetensors" > "$dir/log"
cat "$dir/log"
grep -q "epoch 2/2" "$dir/log"
grep -q "click auc" "$dir/log"
"$tool" predict "$dir/m.safetensors" --data "$dir/train.csv" --out "$dir/p.csv"
test "$(wc -l < "$dir/p.csv")" -eq 3001
head -1 "$dir/p.csv" | grep -qx "click,watch"
"$tool" export "$dir/m.safetensors" --yaml "$dir/m.yaml" --state-dict "$dir/sd.safetensors"
cmp "$dir/m.yaml" "$yaml"
cut -d, -f2- "$dir/train.csv" > "$dir/bad.csv"
if "$tool" train "$yaml" --data "$dir/bad.csv" --epochs 1 --out "$dir/x.safetensors" 2> "$dir/err"; then
  echo "a data file without f0 trained" >&2
  exit 1
fi
cat "$dir/err"
grep -q "missing f0 (input)" "$dir/err"
echo "moe-graph train, predict, export: ok"
