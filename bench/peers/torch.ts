// PyTorch as a peer of the CPU f32 matmul, where Debian's python3-torch is installed: bench/peers/torch_matmul.py
// runs in a child process (/usr/bin/python3: a pyenv python3 on PATH usually lacks torch) on the very A and B
// that rank1 gets (written to a temporary file), times itself as the harness does (a cold call, then the mean
// over a time budget), and returns C[0, 0] for the same check. The Node process waits meanwhile, so the two
// never share the cores. Also PyTorch's memory bandwidth (torch_bandwidth.py) and its decode on the model shape
// (torch_decode.py), the peers of bench/model.ts's decode.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../environment.ts';
import { resultBase, type CaseResult, type CaseSpec, type Implementation, type MeasureSettings } from '../harness.ts';
import { matmulFlops, type MatmulInputs } from '../cases/matmul.ts';
import { errorText } from './types.ts';

export const torchPython = '/usr/bin/python3';
export const torchImplementation: Implementation = { name: 'pytorch', device: 'cpu', kind: 'peer' };

/** The torch version, or why the peer is skipped. */
export function probeTorch(): { version: string } | { skipped: string } {
  try {
    const version = execFileSync(torchPython, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return { version };
  } catch {
    return { skipped: `python3-torch is not installed for ${torchPython} (apt-get install python3-torch libopenblas0-pthread)` };
  }
}

/**
 * Runs bench/peers/`script` with `args` on torchPython and returns the JSON object on the last line it prints.
 * Throws an error naming the script, with the last line of its stderr, when it fails.
 */
export function runTorchScript<T>(script: string, args: readonly string[]): T {
  try {
    const out = execFileSync(torchPython, [path.join(repoRoot, 'bench/peers', script), ...args], {
      encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 600_000, maxBuffer: 1 << 20,
    });
    return JSON.parse(out.trim().split('\n').at(-1)!) as T;
  } catch (error) {
    const stderr = String((error as { stderr?: unknown }).stderr ?? '').trim().split('\n').at(-1);
    throw new Error(`bench/peers/${script} failed: ${stderr || errorText(error)}`);
  }
}

/** runTorchScript where the peer is optional: its JSON, or why it was skipped (torch missing, the script failed). */
export function torchPeer<T extends object>(script: string, args: readonly string[]): T | { skipped: string } {
  const probe = probeTorch();
  if ('skipped' in probe) return probe;
  try {
    return runTorchScript<T>(script, args);
  } catch (error) {
    return { skipped: errorText(error) };
  }
}

/**
 * Memory bandwidth as PyTorch streams it (bench/peers/torch_bandwidth.py: a 1 GiB sum on every core), the
 * memory-bound limit the decode is measured against; or why it was skipped.
 */
export function torchBandwidth(): { gbPerSecond: number; torch: string; threads: number } | { skipped: string } {
  return torchPeer('torch_bandwidth.py', ['--threads', String(os.availableParallelism())]);
}

/** What bench/peers/torch_decode.py reports: PyTorch's decode on the Qwen2.5-0.5B shape. */
export interface TorchDecode {
  msPerToken: number;
  tokensPerSecond: number;
  weightBytesPerToken: number;
  torch: string;
  threads: number;
  dtype: 'bfloat16' | 'float32';
}

/**
 * PyTorch decoding `decode` tokens one at a time after a `prompt`-token prefill on a `layers`-layer
 * Qwen2.5-0.5B-shaped model with random weights in `dtype` (bench/peers/torch_decode.py); or why it was skipped.
 */
export function torchDecode(options: { layers: number; prompt: number; decode: number; dtype?: TorchDecode['dtype'] }): TorchDecode | { skipped: string } {
  return torchPeer<TorchDecode>('torch_decode.py', [
    '--layers', String(options.layers), '--prompt', String(options.prompt), '--decode', String(options.decode), '--dtype', options.dtype ?? 'bfloat16',
  ]);
}

/** Runs the PyTorch matmul at inputs.n in a child process and reports it as a harness result. */
export function torchMatmulResult(spec: CaseSpec, inputs: MatmulInputs, settings: MeasureSettings): CaseResult {
  const base = resultBase(spec);
  const { n } = inputs;
  const file = path.join(os.tmpdir(), `rank1-bench-torch-${process.pid}-${n}.f32`);
  try {
    const both = new Float32Array(2 * n * n);
    both.set(inputs.a, 0);
    both.set(inputs.b, n * n);
    fs.writeFileSync(file, new Uint8Array(both.buffer));
    const r = runTorchScript<{ firstMs: number; meanMs: number; minMs: number; samples: number; c00: number; threads: number }>('torch_matmul.py', [
      '--n', String(n), '--inputs', file, '--time-ms', String(settings.budgetMs), '--min-samples', String(settings.minIterations),
    ]);
    const flops = matmulFlops(n);
    const check = spec.expected
      ? { value: r.c00, expected: spec.expected.value, tolerance: spec.expected.tolerance, ok: Math.abs(r.c00 - spec.expected.value) <= spec.expected.tolerance }
      : undefined;
    return {
      ...base, meanMs: r.meanMs, minMs: r.minMs, samples: r.samples, firstCallMs: r.firstMs,
      flops, gflops: flops / (r.meanMs / 1e3) / 1e9, ...(check ? { check } : {}),
    };
  } catch (error) {
    return { ...base, skipped: errorText(error) };
  } finally {
    fs.rmSync(file, { force: true });
  }
}
