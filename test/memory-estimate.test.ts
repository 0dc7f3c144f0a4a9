// src/train/memory.ts against the engine's own measurement: one checkpointed rank-1 training step (forward +
// backward) of tiny models on the CPU backend, its high-water mark of live storage bytes (deterministic,
// unlike RSS) next to the estimator's activations, within ±15 %. The shapes are chosen so that every term of
// the estimate (the checkpoints, the forward, loss and layer phases and, inside it, the [T, I] and [T, H]
// widths) carries enough of some case's figure that dropping or doubling it takes that case out of the
// band (asserted below, so the cases cannot drift into not testing it).
import { describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { backward } from '../src/tensor/autograd.ts';
import { div, tidy } from '../src/tensor/index.ts';
import { randomQwen2Model, randomRankOneAdapters, tinyQwen2Config } from '../src/model/random-model.ts';
import type { Qwen2Config } from '../src/model/config.ts';
import { makeBatch } from '../src/train/data-batch.ts';
import { batchLossSum } from '../src/train/trainer.ts';
import { estimateTrainingMemory, layerBackwardValuesPerToken } from '../src/train/memory.ts';

const cpu = getCpuBackend();

interface Case {
  name: string;
  config: Partial<Qwen2Config>;
  tokens: number;
  lossChunk: number;
  checkpointDtype: 'f32' | 'bf16';
}

/** The backend's peak of live bytes during one step, less what was live before it. */
function measuredStepPeak(c: Case): number {
  const config = tinyQwen2Config(c.config);
  const model = randomQwen2Model(config, 1, cpu);
  model.adapters = randomRankOneAdapters(model.dims, 1, cpu);
  model.gradientCheckpointing = true;
  model.checkpointDtype = c.checkpointDtype;
  const inputIds = Int32Array.from({ length: c.tokens }, (_, i) => (i * 7919) % config.vocabSize);
  const batch = makeBatch([{ inputIds, lossMask: new Uint8Array(c.tokens).fill(1) }], 0);
  const liveBefore = cpu.memory().liveBytes;
  cpu.resetPeak();
  const loss = tidy(() => div(batchLossSum(model, batch, c.lossChunk), batch.tokens));
  backward(loss);
  const peak = cpu.memory().peakBytes - liveBefore;
  loss.dispose();
  for (const p of model.adapters.parameters()) {
    p.grad?.dispose();
    p.grad = null;
  }
  model.adapters.dispose();
  model.dispose();
  return peak;
}

function estimate(c: Case) {
  const config = tinyQwen2Config(c.config);
  const model = randomQwen2Model(config, 1, cpu);
  const dims = model.dims;
  model.dispose();
  return { dims, estimate: estimateTrainingMemory(dims, 0, 0, 1, c.tokens, true, { lossChunk: c.lossChunk, checkpointDtype: c.checkpointDtype }) };
}

const base = { hiddenSize: 64, intermediateSize: 256, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16, vocabSize: 128, numHiddenLayers: 2 };
const cases: Case[] = [
  // The layer phase at a few block sizes, f32 and bf16 checkpoints.
  ...[32, 96, 256].map((tokens) => ({ name: `layer phase, T = ${tokens}`, config: base, tokens, lossChunk: 16, checkpointDtype: 'f32' as const })),
  { name: 'layer phase, bf16 checkpoints', config: { ...base, numHiddenLayers: 4 }, tokens: 96, lossChunk: 16, checkpointDtype: 'bf16' },
  // Qwen2.5's proportions (I ≈ 5.5 H, 7 query heads per key/value head) and no GQA at all.
  { name: 'Qwen2.5 proportions', config: { ...base, hiddenSize: 112, intermediateSize: 608, numAttentionHeads: 7, numKeyValueHeads: 1, headDim: 16 }, tokens: 128, lossChunk: 16, checkpointDtype: 'f32' },
  { name: 'no GQA', config: { ...base, numAttentionHeads: 4, numKeyValueHeads: 4 }, tokens: 64, lossChunk: 16, checkpointDtype: 'f32' },
  // Many layers: the checkpoints are a third of the step and more.
  ...[64, 192].map((tokens) => ({ name: `checkpoints, T = ${tokens}`, config: { ...base, numHiddenLayers: 24 }, tokens, lossChunk: 16, checkpointDtype: 'f32' as const })),
  // bf16 checkpoints over many layers: the forward's kept f32 layer outputs make the forward the peak.
  ...[24, 48].map((layers) => ({ name: `forward phase, bf16, ${layers} layers`, config: { ...base, numHiddenLayers: layers }, tokens: 64, lossChunk: 16, checkpointDtype: 'bf16' as const })),
  // A wide vocabulary: the loss phase's [chunk, V] buffers are the peak.
  ...[64, 160].map((tokens) => ({ name: `loss phase, T = ${tokens}`, config: { ...base, vocabSize: 16384 }, tokens, lossChunk: 64, checkpointDtype: 'f32' as const })),
];

describe('the training memory estimate against the measured step peak of live storages', () => {
  const rows = cases.map((c) => {
    const { dims, estimate: e } = estimate(c);
    return { c, dims, e, measured: measuredStepPeak(c) };
  });

  it.each(rows.map((r) => [r.c.name, r] as const))('%s: within ±15 %', (_name, r) => {
    const ratio = r.e.activations / r.measured;
    expect(ratio, `estimate ${r.e.activations} vs measured ${r.measured}`).toBeGreaterThan(0.85);
    console.log(`${r.c.name}: estimate ${r.e.activations}, measured ${r.measured}, ratio ${ratio.toFixed(3)} (peak: ${r.e.terms.peak})`);
    expect(ratio).toBeLessThan(1.15);
  });

  it('dropping or doubling any term takes some case out of the band', () => {
    type Row = (typeof rows)[number];
    // A term's bytes in a case's figure (0 where its phase is not the peak); dropping it moves the ratio by
    // −share, doubling it by +share.
    const leaves = (bytes: (r: Row) => number) => rows.some((r) => {
      const ratio = r.e.activations / r.measured;
      const share = bytes(r) / r.measured;
      return Math.abs(ratio - share - 1) > 0.15 && Math.abs(ratio + share - 1) > 0.15;
    });
    const inPeak = (phase: Row['e']['terms']['peak'], bytes: (r: Row) => number) => (r: Row) => (r.e.terms.peak === phase ? bytes(r) : 0);
    expect(leaves((r) => r.e.terms.checkpoints)).toBe(true);
    expect(leaves(inPeak('forward', (r) => r.e.terms.forward))).toBe(true);
    expect(leaves(inPeak('loss', (r) => r.e.terms.loss))).toBe(true);
    expect(leaves(inPeak('layer', (r) => r.e.terms.layer))).toBe(true);
    // Inside the layer phase: the MLP and residual widths. The attention and key/value widths (4 · heads·hd,
    // 5 · kv·hd) are a seventh or less of the figure at Qwen2's proportions, where the MLP's backward is the
    // layer's peak; they are checked only as part of the band.
    expect(leaves(inPeak('layer', (r) => 4 * r.c.tokens * 8 * r.dims.intermediate))).toBe(true);
    expect(leaves(inPeak('layer', (r) => 4 * r.c.tokens * 9 * r.dims.hidden))).toBe(true);
    // The same inside the forward phase (bf16): the kept f32 layer outputs.
    expect(leaves(inPeak('forward', (r) => 4 * r.c.tokens * r.dims.hidden * r.dims.layers))).toBe(true);
    // The layer figure is the sum of those widths (the function the estimate uses).
    const d = rows[0]!.dims;
    expect(layerBackwardValuesPerToken(d)).toBe(9 * d.hidden + 8 * d.intermediate + 4 * d.heads * d.headDim + 5 * d.kvHeads * d.headDim + d.headDim + 30);
  });
});
