#!/usr/bin/env bash
# The device check, one prepared script for a lent GPU machine (see the brief's `device` tool): run from the
# repository root, it writes everything under $OUT and stays under 8 minutes in all.
#   0. bench/gpu-select.ts: the GPUs sysfs lists, Mesa's device-select layer, a device opened on each GPU (the
#      layer's debug log in gpu-select.log says which device it matched: issue 18's --gpus on real hardware);
#   1. the WebGPU test files with RANK1_REQUIRE_WEBGPU=1 (a skipped WebGPU test is a failure), JSON report;
#   2. `npm run bench -- --backend webgpu --quick` (kernels against tfjs-backend-webgpu and gpu.js), JSON;
#   3. `npm run bench:model -- --backend webgpu` (prefill, decode, training tokens/s of a 0.5B-shaped model), JSON;
#   4. `bench/real-shape-train.ts` at 20 000 tokens on webgpu (issue 18, must 6): the Qwen2.5-0.5B shape trained
#      for up to 2 steps, time per step and the buffer pool's peak against the memory estimate, after the
#      chunked-vs-unchunked loss check at 256 tokens (2 layers), JSON.
# Each part has its own time limit, and none starts past the whole script's budget (460 s; with the 10 s grace
# before a hung part is killed, under 8 minutes in all), so a hung driver costs one part, not the run;
# summary.txt says how each ended. Commit what comes back under bench/results/ and quote the figures in the
# issue note. Name parts to run only those.
#
#   OUT=/tmp/gpu bash bench/gpu.sh          # on the device: run(command="bash bench/gpu.sh", carry=[...])
#   OUT=/tmp/gpu bash bench/gpu.sh real-shape-train webgpu-tests
set -uo pipefail
BUDGET_S=460
PARTS=("$@")
for name in "${PARTS[@]}"; do
  case $name in gpu-select|webgpu-tests|bench-webgpu|bench-model-webgpu|real-shape-train) ;;
    *) echo "bench/gpu.sh: unknown part '$name' (parts: gpu-select webgpu-tests bench-webgpu bench-model-webgpu real-shape-train)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-bench/results/gpu-$(date +%F)}
mkdir -p "$OUT"
summary="$OUT/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

note "started $(date -Is) on $(hostname); node $(node --version 2>/dev/null || echo missing)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
if [ ! -d node_modules ]; then
  note "node_modules missing: npm ci (offline cache only)"
  timeout 120 npm ci --no-audit --no-fund --prefer-offline > "$OUT/npm-ci.log" 2>&1 || { note "npm ci failed: see npm-ci.log"; exit 1; }
fi
export RANK1_REQUIRE_WEBGPU=1

selected() { [ ${#PARTS[@]} -eq 0 ] || [[ " ${PARTS[*]} " == *" $1 "* ]]; }
# Seconds a part may take: its own limit, or what is left of the budget if that is less (0: skip it).
allowed() { local left=$((BUDGET_S - SECONDS)); echo $(( left < $1 ? (left > 0 ? left : 0) : $1 )); }
part() { # name, seconds, command...
  local name=$1 limit; limit=$(allowed "$2"); shift 2
  selected "$name" || return 0
  if [ "$limit" -lt 10 ]; then note "$name: skipped, the ${BUDGET_S} s budget is spent"; return 0; fi
  local started=$SECONDS
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  note "$name: exit $rc after $((SECONDS - started)) s$([ $rc -eq 124 ] && echo " (time limit $limit s)")"
}

MESA_VK_DEVICE_SELECT_DEBUG=1 part gpu-select 30 npx tsx bench/gpu-select.ts --out "$OUT/gpu-select.json"
part webgpu-tests 90 npx vitest run test/webgpu-ops.test.ts test/webgpu-kernels.test.ts test/qwen2-parity.test.ts \
  test/backend-choice.test.ts --reporter=default --reporter=json --outputFile="$OUT/webgpu-tests.json"
part bench-webgpu 100 npx tsx bench/run.ts --backend webgpu --quick --out "$OUT/bench-webgpu.json"
before=$(ls bench/results/*-model-webgpu-*.json 2>/dev/null | sort)
part bench-model-webgpu 120 npx tsx bench/model.ts --backend webgpu --no-peer
for file in $(ls bench/results/*-model-webgpu-*.json 2>/dev/null | sort); do
  grep -qxF "$file" <<< "$before" || cp "$file" "$OUT/"
done
# Up to 300 s: what the budget has left after the parts above (120 s if each ran to its limit: 460 - 30 - 90 -
# 100 - 120). The script stops before a step that would end past its --time-limit (15 s short of the part's),
# writing its JSON after every step; a first step longer than that is cut by the timeout, and the JSON says how
# far it got.
shape_limit=$(allowed 300)
part real-shape-train 300 npx tsx bench/real-shape-train.ts --backend webgpu --hardware --block 20000 --steps 2 \
  --check-unchunked --check-layers 2 --check-block 256 --time-limit $((shape_limit > 25 ? shape_limit - 15 : 10)) \
  --out "$OUT/real-shape-train-webgpu.json"
note "finished $(date -Is), $SECONDS s in all"
