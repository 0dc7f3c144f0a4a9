// src/train/memory.ts's extraction and ablation estimates against the CPU backend's high-water mark of live
// storages: `rank1 extract`'s adapterActivations and `rank1 ablate`'s ablationSweep on tiny random models,
// within ±15 %. The shapes vary layers, H, I, heads, the batch of variants and the vocabulary (with a loss
// chunk that makes the KL phase the ablation's peak), so that dropping or doubling a term takes some case out
// of the band (asserted below).
import { describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { randomQwen2Model, randomRankOneAdapters, tinyQwen2Config } from '../src/model/random-model.ts';
import type { Qwen2Config } from '../src/model/config.ts';
import type { Qwen2Dims } from '../src/model/qwen2.ts';
import { adapterHookNames } from '../src/model/hooks.ts';
import { runWithCache } from '../src/model/activation-cache.ts';
import { adapterActivations } from '../src/interp/extract.ts';
import { ablationGroups, ablationSweep } from '../src/interp/ablate.ts';
import { estimateAblationActivations, estimateExtractionActivations } from '../src/train/memory.ts';

const cpu = getCpuBackend();
const base = { hiddenSize: 64, intermediateSize: 256, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16, vocabSize: 128, numHiddenLayers: 2 };

/** Runs `measure` over `items` one at a time (each peak must be its own). */
async function inTurn<T, R>(items: readonly T[], measure: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  for (const item of items) results.push(await measure(item));
  return results;
}

/** Runs `work` on a random model with rank-1 adapters; the backend's peak of live bytes during it. */
async function peakOf(config: Partial<Qwen2Config>, work: (model: ReturnType<typeof randomQwen2Model>) => Promise<unknown>): Promise<{ dims: Qwen2Dims; peak: number }> {
  const model = randomQwen2Model(tinyQwen2Config(config), 1, cpu);
  model.adapters = randomRankOneAdapters(model.dims, 1, cpu);
  const before = cpu.memory().liveBytes;
  cpu.resetPeak();
  await work(model);
  const peak = cpu.memory().peakBytes - before;
  const dims = model.dims;
  model.adapters.dispose();
  model.dispose();
  return { dims, peak };
}

const ids = (tokens: number, vocab: number) => Int32Array.from({ length: tokens }, (_, i) => (i * 7919) % vocab);
const inBand = (estimate: number, measured: number) => estimate / measured > 0.85 && estimate / measured < 1.15;

describe('extraction: the estimate against the measured peak', async () => {
  const shapes: [string, Partial<Qwen2Config>, number][] = [
    ['2 layers', base, 128], ['24 layers', { ...base, numHiddenLayers: 24 }, 128], ['8 layers, I = 608', { ...base, intermediateSize: 608, numHiddenLayers: 8 }, 64],
    ['8 layers, H = 128', { ...base, hiddenSize: 128, numHiddenLayers: 8 }, 64], ['8 layers, 8 heads', { ...base, numAttentionHeads: 8, numHiddenLayers: 8 }, 96],
  ];
  const rows = await inTurn(shapes, async ([name, config, tokens]) => {
    const hooks = adapterHookNames(config.numHiddenLayers!);
    // The same forward with the adapters' graph: how extraction ran before it moved under noGrad (the
    // README table's "before" column), and adapterActivations as it runs now.
    const withGraph = await peakOf(config, async (model) => {
      const { logits, cache } = runWithCache(model, ids(tokens, config.vocabSize!), hooks, { lastPositionOnly: true });
      logits.dispose();
      cache.dispose();
    });
    const extraction = await peakOf(config, (model) => adapterActivations(model, ids(tokens, config.vocabSize!), hooks));
    return { name, tokens, dims: withGraph.dims, graph: withGraph.peak, noGraph: extraction.peak };
  });

  it.each(rows.map((r) => [r.name, r] as const))('%s: within ±15 %, with the graph and as extraction runs (no graph)', (_name, r) => {
    const e = estimateExtractionActivations(r.dims, r.tokens, true);
    const n = estimateExtractionActivations(r.dims, r.tokens);
    console.log(`${r.name}: with the graph, estimate ${e} vs measured ${r.graph} (${(e / r.graph).toFixed(3)}); extraction (no graph) ${n} vs ${r.noGraph} (${(n / r.noGraph).toFixed(3)})`);
    expect(inBand(e, r.graph), `${e} vs ${r.graph}`).toBe(true);
    expect(inBand(n, r.noGraph), `${n} vs ${r.noGraph}`).toBe(true);
  });

  it('the per-layer graph term matters: without it, or doubled, the many-layer case leaves the band', () => {
    const r = rows[1]!;
    const perLayer = estimateExtractionActivations({ ...r.dims, layers: 1 }, r.tokens, true) - estimateExtractionActivations({ ...r.dims, layers: 0 }, r.tokens, true);
    const e = estimateExtractionActivations(r.dims, r.tokens, true);
    expect(inBand(e - r.dims.layers * perLayer, r.graph)).toBe(false);
    expect(inBand(e + r.dims.layers * perLayer, r.graph)).toBe(false);
    // The graph is what makes extraction grow with layers: under noGrad it is several times smaller.
    expect(r.graph / r.noGraph).toBeGreaterThan(3);
  });
});

describe('ablation: the estimate against the measured peak', async () => {
  const shapes: [string, Partial<Qwen2Config>, number, number, number][] = [
    ['2 layers, batch 1', base, 128, 1, 16], ['24 layers, batch 1', { ...base, numHiddenLayers: 24 }, 128, 1, 16],
    ['8 layers, batch 3', { ...base, numHiddenLayers: 8 }, 128, 3, 16], ['2 layers, batch 7', base, 128, 7, 16],
    ['I = 608, batch 1', { ...base, intermediateSize: 608 }, 128, 1, 16], ['H = 128, batch 2', { ...base, hiddenSize: 128 }, 96, 2, 16],
    ['wide vocabulary, chunk 64', { ...base, vocabSize: 16384 }, 128, 3, 64],
  ];
  const rows = await inTurn(shapes, async ([name, config, tokens, batch, lossChunk]) => {
    const { dims, peak } = await peakOf(config, (model) => ablationSweep(
      model, [{ example: 0, inputIds: ids(tokens, config.vocabSize!) }], ablationGroups(model.dims.layers, adapterHookNames(model.dims.layers)), { batch, lossChunk },
    ));
    return { name, tokens, batch, lossChunk, dims, peak, e: estimateAblationActivations(dims, tokens, batch, lossChunk) };
  });

  it.each(rows.map((r) => [r.name, r] as const))('%s: within ±15 %', (_name, r) => {
    console.log(`${r.name}: ablation estimate ${r.e.bytes} vs measured ${r.peak} (${(r.e.bytes / r.peak).toFixed(3)}; peak ${r.e.terms.forward >= r.e.terms.loss ? 'forward' : 'loss'})`);
    expect(inBand(r.e.bytes, r.peak), `${r.e.bytes} vs ${r.peak}`).toBe(true);
  });

  it('dropping or doubling a term takes some case out of the band', () => {
    const leaves = (bytes: (r: (typeof rows)[number]) => number) => rows.some((r) => !inBand(r.e.bytes - bytes(r), r.peak) && !inBand(r.e.bytes + bytes(r), r.peak));
    const forwardPeak = (bytes: (r: (typeof rows)[number]) => number) => (r: (typeof rows)[number]) => (r.e.terms.forward >= r.e.terms.loss ? bytes(r) : 0);
    // The kept residual stream [L, T, H], and the variants' intermediates.
    expect(leaves(forwardPeak((r) => 4 * r.tokens * r.dims.layers * r.dims.hidden))).toBe(true);
    expect(leaves(forwardPeak((r) => r.e.terms.forward))).toBe(true);
    expect(leaves((r) => (r.e.terms.loss > r.e.terms.forward ? r.e.terms.loss : 0))).toBe(true);
  });
});
