#!/usr/bin/env bash
# One command for a lent GPU: mamol-bench speed (ViT-B/16 and the offline backbone) and one Trento
# cell trained at the default budget, with the device name in every output. Run from the repository
# root on the device machine, with the wheels of ../shared/tools/device-wheels.sh in .whl/ and the
# Trento scene in .data/trento (both ignored by git, both carried):
#     python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && \
#     export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu_bench.sh "$OUT"
# On a machine without a GPU the same commands run on the CPU (slowly).
# With GRID_SECONDS=N it then continues the Trento 9-cell grid at today's defaults of docs/benchmarks.md
# (docs/results/trento_lidar_defaults: float32 as its rows, the methods still to run) for about N
# seconds: the committed results.csv is copied to "$out/grid" first unless an earlier call left one
# there (finished cells are skipped), the grid stops cleanly at the limit (Ctrl-C; killed a minute
# later if it hangs), and the rows it adds are the lines of "$out/grid/results.csv" past the
# committed file's.
set -euo pipefail
out="${1:-runs/gpu_bench}"
# the commands in cli/ import themselves as mamol_cli (the name pip installs them under)
shim="$(mktemp -d)"
ln -s "$PWD/cli" "$shim/mamol_cli"
export PYTHONPATH="$shim:${PYTHONPATH:-}"
mkdir -p "$out"
python3 - <<'PY' | tee "$out/device.txt"
import torch
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "| torch", torch.__version__)
PY
python3 -m mamol_cli.bench speed --json "$out/speed.json" | tee "$out/speed.md"
if [ -d .data/trento ]; then
  python3 -m mamol_cli.bench run --scene .data/trento --name trento_lidar --rates 0.7 --conditions both --methods mamol \
      --backbone minilm-l6@3 --eval-mode pixel,dense --progress none -o "$out/trento_minilm"
  python3 -m mamol_cli.bench run --scene .data/trento --name trento_lidar --rates 0.7 --conditions both --methods mamol \
      --backbone vit-b-16-random --eval-mode pixel,dense --progress none -o "$out/trento_vit"
  python3 -m mamol_cli.bench table --results "$out/trento_minilm/results.csv" | tee "$out/trento_minilm.md"
  python3 -m mamol_cli.bench table --results "$out/trento_vit/results.csv" | tee "$out/trento_vit.md"
fi
if [ "${GRID_SECONDS:-0}" -gt 0 ] && [ -d .data/trento ]; then
  grid=docs/results/trento_lidar_defaults
  mkdir -p "$out/grid"
  [ -f "$out/grid/results.csv" ] || cp "$grid/results.csv" "$out/grid/results.csv"
  # the command of "The 9-cell grid at today's defaults" in docs/benchmarks.md, with the scene where this script finds it
  timeout -k 60 --signal=INT "$GRID_SECONDS" python3 -m mamol_cli.bench run --scene .data/trento --name trento_lidar \
      --backbone minilm-l6@3 --precision fp32 --progress none --rates 0.5,0.7,0.9 \
      --conditions lidar_channel2,lidar_elevation,both --seeds 0,1,2 --methods moe_rep,mmp,dcp \
      -o "$out/grid" || { rc=$?; [ "$rc" -eq 124 ] || exit "$rc"; }
  echo "grid: $(( $(wc -l < "$out/grid/results.csv") - $(wc -l < "$grid/results.csv") )) rows added" | tee "$out/grid/added.txt"
fi
