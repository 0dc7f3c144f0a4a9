// src/train/memory.ts against the WebGPU backend's own peak: the buffer pool's high-water mark of live bytes
// (memory().peakBytes, src/kernels/webgpu/runtime.ts) during one checkpointed rank-1 training step of tiny
// models, within ±15 % of the estimate, as test/memory-estimate.test.ts does on the CPU backend. On a CPU
// adapter (lavapipe, llvmpipe) the streaming matmul transposes the LM head before each loss chunk's logits
// (src/kernels/webgpu/matmul.ts): a case with a wide bf16 head makes that copy the peak, and the estimate
// counts it (transposedHeadBytesPerValue). Skips without an adapter, like the other WebGPU tests.
import { describe, expect, it } from 'vitest';
import { softwareRasterizerName } from '../src/kernels/webgpu/adapter-kind.ts';
import { probeForTests, registerRequiredFailure } from './webgpu-helpers.ts';
import { inPeak, measureCases, modelHas, someCaseLeavesBand, type StepCase } from './helpers/memory-step.ts';

const { backend: gpu, reason } = await probeForTests('memory-estimate-webgpu');
registerRequiredFailure(reason);

const base = { hiddenSize: 64, intermediateSize: 256, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16, vocabSize: 128, numHiddenLayers: 2 };
const qwenProportions = { ...base, hiddenSize: 112, intermediateSize: 608, numAttentionHeads: 7, numKeyValueHeads: 1, headDim: 16 };
const cases: StepCase[] = [
  ...[32, 256].map((tokens) => ({ name: `layer phase, T = ${tokens}`, config: base, tokens, lossChunk: 16, checkpointDtype: 'f32' as const })),
  { name: 'Qwen2.5 proportions, bf16 checkpoints', config: qwenProportions, tokens: 128, lossChunk: 16, checkpointDtype: 'bf16' },
  { name: 'checkpoints, 24 layers', config: { ...base, numHiddenLayers: 24 }, tokens: 192, lossChunk: 16, checkpointDtype: 'f32' },
  { name: 'loss phase, f32 head', config: { ...base, vocabSize: 16384 }, tokens: 160, lossChunk: 64, checkpointDtype: 'f32' },
  // A bf16 head wider than a chunk's logits: on a CPU adapter its transposed copy is the loss phase's peak.
  { name: 'loss phase, wide bf16 head', config: { ...base, vocabSize: 32768 }, tokens: 64, lossChunk: 16, checkpointDtype: 'bf16', weightDtype: 'bf16' },
];

describe.runIf(gpu !== null)('the training memory estimate against the WebGPU buffer pool\'s peak', async () => {
  const cpuAdapter = softwareRasterizerName(gpu!.runtime.acquired.adapterInfo) !== null;
  const chunked = modelHas('layerTokenChunk', gpu!);
  const offload = modelHas('offloadCheckpoints', gpu!);
  const featureCases: StepCase[] = [
    ...(chunked ? [{ name: 'layer token chunk 32', config: qwenProportions, tokens: 256, lossChunk: 16, checkpointDtype: 'bf16' as const, layerTokenChunk: 32 }] : []),
    ...(offload ? [{ name: 'offloaded checkpoints, 24 layers', config: { ...base, numHiddenLayers: 24 }, tokens: 192, lossChunk: 16, checkpointDtype: 'bf16' as const, offloadCheckpoints: true }] : []),
  ];
  const rows = await measureCases(gpu!, [...cases, ...featureCases], cpuAdapter);

  it.each(rows.map((r) => [r.c.name, r] as const))('%s: within ±15 %', (_name, r) => {
    const ratio = r.e.activations / r.measured;
    console.log(`${r.c.name}: estimate ${r.e.activations}, measured ${r.measured}, ratio ${ratio.toFixed(3)} (peak: ${r.e.terms.peak})`);
    expect(ratio).toBeGreaterThan(0.85);
    expect(ratio).toBeLessThan(1.15);
  });

  it('dropping or doubling a term takes some case out of the band', () => {
    expect(someCaseLeavesBand(rows, (r) => r.e.terms.checkpoints)).toBe(true);
    expect(someCaseLeavesBand(rows, inPeak('loss', (r) => r.e.terms.loss))).toBe(true);
    expect(someCaseLeavesBand(rows, inPeak('layer', (r) => r.e.terms.layer))).toBe(true);
    // The transposed head (CPU adapters only): the wide-head case leaves the band without it.
    if (cpuAdapter) {
      const wide = rows.find((r) => r.c.name === 'loss phase, wide bf16 head')!;
      const head = 2 * wide.dims.vocab * wide.dims.hidden - 4 * wide.c.lossChunk * wide.dims.vocab;
      expect((wide.e.activations - head) / wide.measured).toBeLessThan(0.85);
    }
    // Offloaded: the device holds no checkpoint; keeping them on it would leave the band.
    const offloaded = rows.find((r) => r.c.offloadCheckpoints);
    if (offloaded) expect((offloaded.e.activations + offloaded.e.host) / offloaded.measured).toBeGreaterThan(1.15);
  });
});
