// Every differentiable op (test/helpers/op-specs.ts) on WebGPU against the CPU backend: forward and
// gradients, on random shapes. Skipped with the reason when no WebGPU adapter answers, unless
// RANK1_REQUIRE_WEBGPU=1 (CI), where that is a failure.
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Backend } from '../src/kernels/backend.ts';
import { probeWebGpu } from '../src/kernels/webgpu/index.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { checkAcrossBackends } from './helpers/op-check.ts';
import { opSpecs } from './helpers/op-specs.ts';

const probe = await probeWebGpu();
const required = process.env['RANK1_REQUIRE_WEBGPU'] === '1';
const reason = 'reason' in probe ? probe.reason : '';
if (reason && !required) console.warn(`[webgpu-ops] skipping WebGPU op tests: ${reason}`);

describe.runIf(required && reason)('WebGPU is required (RANK1_REQUIRE_WEBGPU=1)', () => {
  it('has an adapter', () => {
    expect.fail(`no WebGPU adapter: ${reason}`);
  });
});

describe.skipIf(!!reason)('ops on WebGPU match the CPU backend', () => {
  let gpu: Backend;
  beforeAll(() => {
    gpu = (probe as { backend: Backend }).backend;
  });
  for (const spec of opSpecs) {
    it(spec.name, async () => {
      await fc.assert(
        fc.asyncProperty(spec.cases, (c) => checkAcrossBackends(c, getCpuBackend(), gpu, 1e-4)),
        { numRuns: 8, seed: 4242 },
      );
    });
  }
});
