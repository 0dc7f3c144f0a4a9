// What a training step's memory is measured and modelled with, for the benches that set src/train/memory.ts's
// estimate beside a measurement (bench/real-shape-train.ts; bench/loss-memory.ts keeps the same model): the
// process's peak RSS, the CPU matmul's WebAssembly memory, and one bench part run in a child process of its own
// so that its peak RSS is its own.
import { execFileSync } from 'node:child_process';
import type { Qwen2Dims } from '../src/model/qwen2.ts';
import { projectionDims } from '../src/model/lora.ts';

/** The highest resident set size this process has had (getrusage's maxRSS), in bytes. */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

/**
 * The CPU matmul's WebAssembly memory at its defaults (src/kernels/cpu/matmul.ts): a 192 MiB data region and
 * resident copies of the bf16 weights it multiplies, at most 2 GiB. Not in the backend's live storages.
 */
export function cpuMatmulMemoryBytes(halfWeightBytes: number): number {
  return 192 * 2 ** 20 + Math.min(halfWeightBytes, 2048 * 2 ** 20);
}

/** Parameters of rank-1 adapters on all 7 projections of every layer (an A [1, in] and a B [out, 1] each). */
export function rankOneAdapterParameters(dims: Qwen2Dims): number {
  const perLayer = Object.values(projectionDims(dims.hidden, dims.intermediate, dims.heads, dims.kvHeads, dims.headDim))
    .reduce((n, d) => n + d.inFeatures + d.outFeatures, 0);
  return dims.layers * perLayer;
}

/**
 * Runs `script` (a bench file) with `args` in a fresh Node process (tsx loaded) and returns the JSON its last
 * line of stdout holds; its stderr passes through. Throws naming the part when it fails or prints no JSON.
 */
export function runBenchChild<T>(script: string, args: readonly string[], what: string): T {
  let stdout: string;
  try {
    stdout = execFileSync(process.execPath, ['--import', 'tsx', script, ...args], { encoding: 'utf8', maxBuffer: 1 << 24, stdio: ['ignore', 'pipe', 'inherit'] });
  } catch (error) {
    throw new Error(`${what} failed (${script} ${args.join(' ')}): ${(error as Error).message.split('\n')[0]}`);
  }
  const last = stdout.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(last) as T;
  } catch {
    throw new Error(`${what} printed no JSON result on its last line (got ${JSON.stringify(last.slice(0, 200))})`);
  }
}
