// Shared by the WebGPU test files: the adapter probe with the skipping policy, seeded data, and
// tolerance checks against the CPU reference.
//
// Skipping policy: without an adapter the WebGPU suites skip and print why, unless RANK1_REQUIRE_WEBGPU=1,
// where `registerRequiredFailure` adds a failing test carrying the reason.
import { describe, expect, it } from 'vitest';
import type { Backend, DType, Storage, View } from '../src/kernels/backend.ts';
import { probeWebGpu, type WebGpuBackend, type WebGpuBackendOptions } from '../src/kernels/webgpu/index.ts';
import { Random } from '../src/tensor/random.ts';

export const webGpuRequired = process.env['RANK1_REQUIRE_WEBGPU'] === '1';

export interface WebGpuProbe {
  backend: WebGpuBackend | null;
  /** Why there is no backend ('' when there is one). */
  reason: string;
}

/** Probes for an adapter; on failure warns (suite `suite` is skipped) unless WebGPU is required. */
export async function probeForTests(suite: string, options: WebGpuBackendOptions = {}): Promise<WebGpuProbe> {
  const probe = await probeWebGpu(options);
  if ('backend' in probe) return { backend: probe.backend, reason: '' };
  if (!webGpuRequired) console.warn(`[${suite}] skipping WebGPU tests: ${probe.reason}`);
  return { backend: null, reason: probe.reason };
}

/** With RANK1_REQUIRE_WEBGPU=1 and no adapter: one failing test that says why. */
export function registerRequiredFailure(reason: string): void {
  describe.runIf(webGpuRequired && reason !== '')('WebGPU is required (RANK1_REQUIRE_WEBGPU=1)', () => {
    it('has an adapter', () => {
      expect.fail(reason);
    });
  });
}

// ---- data ---------------------------------------------------------------------------------------

export function randomFloats(n: number, seed: number, scale = 1): Float32Array {
  const rng = new Random(seed);
  return Float32Array.from({ length: n }, () => rng.range(-scale, scale));
}

export function randomInts(n: number, seed: number, low: number, high: number): Int32Array {
  const rng = new Random(seed);
  return Int32Array.from({ length: n }, () => low + rng.int(high - low));
}

export function contiguous(storage: Storage, shape: readonly number[] = [storage.numel]): View {
  const strides: number[] = [];
  let stride = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = stride;
    stride *= shape[i]!;
  }
  return { storage, shape, strides, offset: 0 };
}

/** The whole storage read back, floats widened. */
export async function readAll(backend: Backend, storage: Storage): Promise<Float32Array | Int32Array> {
  return backend.read(contiguous(storage));
}

/** Uploads the same values to both backends (f16/bf16 from raw bits). */
export function uploadBoth(
  cpu: Backend, gpu: Backend, data: Float32Array | Uint16Array | Int32Array, dtype: DType,
): [Storage, Storage] {
  return [cpu.upload(data, dtype), gpu.upload(data, dtype)];
}

// ---- tolerances ---------------------------------------------------------------------------------

export interface Tolerance {
  /** Relative to each expected element. */
  rtol?: number;
  /** Absolute, as a fraction of the largest |expected| (long reductions lose precision relative to the whole). */
  scaledAtol?: number;
  atol?: number;
}

/** Elementwise |actual - expected| <= atol + scaledAtol * max|expected| + rtol * |expected|; NaN and infinities must match. */
export function expectClose(
  actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: Tolerance, label = '',
): void {
  expect(actual.length, `${label} length`).toBe(expected.length);
  const { rtol = 1e-4, scaledAtol = 0, atol = 1e-6 } = tolerance;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i]!;
    if (Number.isFinite(e)) scale = Math.max(scale, Math.abs(e));
  }
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (Number.isNaN(e) || !Number.isFinite(e)) {
      if (!Object.is(a, e) && !(Number.isNaN(a) && Number.isNaN(e))) {
        expect.fail(`${label}[${i}]: got ${a}, expected ${e}`);
      }
      continue;
    }
    const bound = atol + scaledAtol * scale + rtol * Math.abs(e);
    if (!(Math.abs(a - e) <= bound)) {
      expect.fail(`${label}[${i}]: got ${a}, expected ${e} (|diff| ${Math.abs(a - e)} > ${bound})`);
    }
  }
}

/** Reads `gpu` and `cpu` storages and compares them. */
export async function expectStoragesClose(
  gpuBackend: Backend, gpu: Storage, cpuBackend: Backend, cpu: Storage, tolerance: Tolerance, label = '',
): Promise<void> {
  expectClose(await readAll(gpuBackend, gpu), await readAll(cpuBackend, cpu), tolerance, label);
}
