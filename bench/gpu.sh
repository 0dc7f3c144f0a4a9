#!/usr/bin/env bash
# The device check, one prepared script for a lent GPU machine (see the brief's `device` tool): run from the
# repository root, it writes everything under $OUT and stays under 8 minutes in all.
#   1. the WebGPU test files with RANK1_REQUIRE_WEBGPU=1 (a skipped WebGPU test is a failure), JSON report;
#   2. `npm run bench -- --backend webgpu --quick` (kernels against tfjs-backend-webgpu and gpu.js), JSON;
#   3. `npm run bench:model -- --backend webgpu` (prefill, decode, training tokens/s of a 0.5B-shaped model), JSON.
# Each part has its own time limit, so a hung driver costs one part, not the run; summary.txt says how each
# ended. Commit what comes back under bench/results/ and quote the figures in the issue note.
#
#   OUT=/tmp/gpu bash bench/gpu.sh          # on the device: run(command="bash bench/gpu.sh", carry=[...])
set -uo pipefail
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

part() { # name, seconds, command...
  local name=$1 limit=$2; shift 2
  local started=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  note "$name: exit $rc after $((SECONDS - started)) s$([ $rc -eq 124 ] && echo " (time limit $limit s)")"
}

part webgpu-tests 120 npx vitest run test/webgpu-ops.test.ts test/webgpu-kernels.test.ts test/qwen2-parity.test.ts \
  test/backend-choice.test.ts --reporter=default --reporter=json --outputFile="$OUT/webgpu-tests.json"
part bench-webgpu 150 npx tsx bench/run.ts --backend webgpu --quick --out "$OUT/bench-webgpu.json"
before=$(ls bench/results/*-model-webgpu-*.json 2>/dev/null | sort)
part bench-model-webgpu 180 npx tsx bench/model.ts --backend webgpu --no-peer
for file in $(ls bench/results/*-model-webgpu-*.json 2>/dev/null | sort); do
  grep -qxF "$file" <<< "$before" || cp "$file" "$OUT/"
done
note "finished $(date -Is), $SECONDS s in all"
