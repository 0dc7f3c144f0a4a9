// Token-chunked layer recompute + backward (Qwen2Model.layerTokenChunk, issue 18, must 2): a checkpointed
// layer runs over chunks of tokens in the forward and in backward, the attention sub-block too (each chunk's
// queries against the keys and values of the tokens up to its end, the only tensors that span all T). The loss
// and every adapter gradient equal whole layers' (fast-check over tokens, chunk sizes — 1, not dividing T,
// larger than T — and batch), hooks on the MLP or the attention still see whole tensors (that sub-block runs
// whole), and the step's peak of live bytes no longer carries the MLP's [T, I] nor the attention's [T, H]
// intermediates.
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { backward } from '../src/tensor/autograd.ts';
import { div, tidy, type Tensor } from '../src/tensor/index.ts';
import { randomQwen2Model, randomRankOneAdapters, tinyQwen2Config } from '../src/model/random-model.ts';
import type { Qwen2Model } from '../src/model/qwen2.ts';
import { hookName } from '../src/model/hooks.ts';
import { withHooks } from '../src/model/hook-registry.ts';
import { makeBatch, type Batch } from '../src/train/data-batch.ts';
import { syntheticRows } from '../src/train/data-synthetic.ts';
import { tokenizeRows } from '../src/train/data.ts';
import { DEFAULT_LAYER_TOKEN_CHUNK, PAPER_TRAINING, batchLossSum, train, type TrainSettings } from '../src/train/trainer.ts';
import { expectClose } from './webgpu-helpers.ts';
import { disposeAdaptedModel } from './helpers/adapted-model.ts';

const cpu = getCpuBackend();
const shape = { hiddenSize: 32, intermediateSize: 96, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: 64, numHiddenLayers: 2 };

function batchOf(rows: number, tokens: number, vocab: number, seed = 0): Batch {
  return makeBatch(Array.from({ length: rows }, (_, r) => ({
    inputIds: Int32Array.from({ length: tokens }, (_, i) => (i * 7919 + r * 104729 + seed * 31 + 13) % vocab),
    lossMask: Uint8Array.from({ length: tokens }, (_, i) => ((i + r) % 5 === 4 ? 0 : 1)),
  })), 0);
}

function makeModel(config: Partial<typeof shape>, chunk: number | null, dtype: 'f32' | 'bf16' = 'f32'): Qwen2Model {
  const model = randomQwen2Model(tinyQwen2Config(config), 5, cpu);
  model.adapters = randomRankOneAdapters(model.dims, 6, cpu, 0.2);
  model.gradientCheckpointing = true;
  model.checkpointDtype = dtype;
  model.layerTokenChunk = chunk;
  return model;
}

/** Loss and every adapter gradient of one checkpointed step. */
async function step(model: Qwen2Model, batch: Batch): Promise<{ loss: number; grads: Float32Array[] }> {
  const loss = tidy(() => div(batchLossSum(model, batch, 8), Math.max(batch.tokens, 1)));
  const value = await loss.item();
  backward(loss);
  loss.dispose();
  const grads = await Promise.all(model.adapters!.parameters().map((p) => p.grad!.toFloat32Array()));
  return { loss: value, grads };
}

/**
 * Chunked vs whole layers. With bf16 checkpoints the compared model has one layer: its input is the embedding in
 * both runs. Deeper, a layer's input comes from the chunked forward, equal to the whole one only to f32 rounding
 * (the attention kernel's blocks follow the chunk's queries), and a last-bit difference can move an element's
 * bf16 rounding by 2^-8; that case has its own property below.
 */
async function compare(batch: Batch, chunk: number, dtype: 'f32' | 'bf16'): Promise<void> {
  const config = dtype === 'bf16' ? { ...shape, numHiddenLayers: 1 } : shape;
  const whole = makeModel(config, null, dtype);
  const chunked = makeModel(config, chunk, dtype);
  const a = await step(whole, batch);
  const b = await step(chunked, batch);
  disposeAdaptedModel(whole);
  disposeAdaptedModel(chunked);
  expectClose([b.loss], [a.loss], { rtol: 1e-6 }, 'loss');
  b.grads.forEach((g, i) => expectClose(g, a.grads[i]!, { rtol: 1e-4, scaledAtol: 1e-5 }, `adapter grad ${i}`));
}

/** The L2 distance between two lists of gradients. */
function distance(a: Float32Array[], b: Float32Array[]): number {
  let sum = 0;
  a.forEach((g, i) => g.forEach((x, j) => { sum += (x - b[i]![j]!) ** 2; }));
  return Math.sqrt(sum);
}

describe('Qwen2Model.layerTokenChunk', () => {
  it('loss and adapter gradients equal whole layers (any tokens, chunk and batch)', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 24 }), fc.integer({ min: 1, max: 2 }), fc.constantFrom('f32' as const, 'bf16' as const),
      async (tokens, chunk, rows, dtype) => compare(batchOf(rows, tokens, shape.vocabSize, tokens + chunk), chunk, dtype),
    ), { numRuns: 400 });
  });

  it('with bf16 checkpoints and several layers, chunking moves the gradients far less than bf16 checkpoints do', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 2, max: 20 }), fc.integer({ min: 1, max: 19 }), fc.integer({ min: 1, max: 2 }),
      async (tokens, chunk, rows) => {
        fc.pre(chunk < tokens);
        const batch = batchOf(rows, tokens, shape.vocabSize, tokens + chunk);
        const run = async (chunkSetting: number | null, dtype: 'f32' | 'bf16') => {
          const model = makeModel(shape, chunkSetting, dtype);
          const result = await step(model, batch);
          disposeAdaptedModel(model);
          return result;
        };
        const exact = await run(null, 'f32');
        const whole = await run(null, 'bf16');
        const chunked = await run(chunk, 'bf16');
        expectClose([chunked.loss], [whole.loss], { rtol: 1e-6 }, 'loss');
        expect(distance(chunked.grads, whole.grads)).toBeLessThan(0.5 * distance(whole.grads, exact.grads));
      },
    ), { numRuns: 12 });
  });

  /**
   * The same step whole and in chunks of `chunk` tokens, with a hook recording the value shapes at `names`:
   * the hooked sub-blocks must run whole (the hooks see every token, as in the whole model) and the loss and
   * adapter gradients must still equal the whole model's.
   */
  async function expectHookedSubBlocksWhole(names: string[], tokens: number, chunk: number): Promise<void> {
    const batch = batchOf(2, tokens, shape.vocabSize);
    const seen: number[][] = [];
    const record = (value: Tensor) => void seen.push([...value.shape]);
    const hooks: [string, (v: Tensor) => void][] = names.map((name) => [name, record]);
    const whole = makeModel(shape, null);
    const plain = await withHooks(whole, hooks, () => step(whole, batch));
    const wholeShapes = seen.splice(0);
    const chunked = makeModel(shape, chunk);
    const hooked = await withHooks(chunked, hooks, () => step(chunked, batch));
    expect(seen).toEqual(wholeShapes);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((s) => s[1] === tokens)).toBe(true);
    expectClose([hooked.loss], [plain.loss], { rtol: 1e-6 }, 'loss');
    hooked.grads.forEach((g, i) => expectClose(g, plain.grads[i]!, { rtol: 1e-4, scaledAtol: 1e-5 }, `adapter grad ${i}`));
    disposeAdaptedModel(whole);
    disposeAdaptedModel(chunked);
  }

  it('the chunks do change how the layer runs: a hook on the MLP makes its layer whole, and sees all tokens', async () => {
    await expectHookedSubBlocksWhole([hookName.mlpAct(1), hookName.adapter(0, 'down_proj')], 12, 5);
  });

  it('a hook on the attention makes its sub-block whole, and sees all tokens', async () => {
    await expectHookedSubBlocksWhole([hookName.q(0), hookName.adapter(1, 'o_proj'), hookName.residMid(1)], 11, 4);
  });

  it('refuses a chunk that is not a whole number of tokens', () => {
    const model = makeModel(shape, 2.5);
    expect(() => batchLossSum(model, batchOf(1, 8, shape.vocabSize))).toThrow(/layerTokenChunk must be a whole number/);
    disposeAdaptedModel(model);
  });

  /**
   * Peak live bytes of one step (forward + backward), less what was live before; with `hooks`, under those
   * (read-only, no-op) hooks, which make the sub-blocks they see run whole.
   */
  function stepPeak(tokens: number, chunk: number | null, config: Partial<typeof shape> = { intermediateSize: 512 }, hooks: string[] = []): number {
    const model = makeModel({ ...shape, ...config }, chunk);
    const batch = batchOf(1, tokens, shape.vocabSize);
    const peak = withHooks(model, hooks.map((name) => [name, () => {}] as [string, () => void]), () => {
      const before = cpu.memory().liveBytes;
      cpu.resetPeak();
      const loss = tidy(() => div(batchLossSum(model, batch, 8), batch.tokens));
      backward(loss);
      const bytes = cpu.memory().peakBytes - before;
      loss.dispose();
      return bytes;
    });
    disposeAdaptedModel(model);
    return peak;
  }

  it('the step peak no longer grows with T by the MLP intermediates ([T, I] terms)', () => {
    const I = 512;
    const [t1, t2] = [64, 192];
    const wholeSlope = (stepPeak(t2, null) - stepPeak(t1, null)) / (t2 - t1);
    const chunkedSlope = (stepPeak(t2, 16) - stepPeak(t1, 16)) / (t2 - t1);
    // Whole layers hold several f32 [T, I] tensors at the peak (gate, up, their SwiGLU, its gradient...): at
    // least 4 I floats per token. In chunks, they are [16, I] whatever T is: the slope loses them.
    expect(wholeSlope).toBeGreaterThan(4 * 4 * I);
    expect(wholeSlope - chunkedSlope).toBeGreaterThan(4 * 4 * I);
  });

  it('the step peak no longer grows with T by the attention sub-block\'s [T, H] intermediates', () => {
    // Wide H, narrow I and one key/value head: the attention's [T, H] tensors dominate, keys and values are small.
    const config = { hiddenSize: 128, intermediateSize: 64, numAttentionHeads: 4, numKeyValueHeads: 1, headDim: 32 };
    const H = config.hiddenSize;
    const [t1, t2] = [64, 192];
    const slope = (hooks: string[]) => (stepPeak(t2, 16, config, hooks) - stepPeak(t1, 16, config, hooks)) / (t2 - t1);
    // A no-op hook on resid_mid makes each layer's attention sub-block run whole (the MLP still in chunks): the
    // layer as it ran before the attention was chunked. Whole, its recompute holds the normed input, q, the
    // rotated q, the attention output, o_proj's output and their gradients, all f32 [T, H]; in chunks they are
    // [16, H] whatever T is. Measured: 17.0 H floats per token whole, 6.6 in chunks.
    const wholeAttention = slope([hookName.residMid(0), hookName.residMid(1)]);
    const chunked = slope([]);
    expect(wholeAttention - chunked).toBeGreaterThan(6 * 4 * H);
  });

  it('the trainer sets it (default DEFAULT_LAYER_TOKEN_CHUNK): a full finetune trains the same run in chunks', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-layer-chunk-'));
    try {
      const examples = tokenizeRows(syntheticRows(8, 5, { vocabSize: 48, minLength: 9, maxLength: 17 }), null);
      const settings: TrainSettings = {
        ...PAPER_TRAINING, mode: 'full', epochs: 1, maxSteps: 2, batchSize: 4, microBatch: 2, lr: 2e-2, saveEvery: 100,
        keepCheckpoints: 0, seed: 3, gradientCheckpointing: true, checkpointDtype: 'f32',
      };
      const run = async (layerTokenChunk: number | undefined, name: string) => {
        const model = randomQwen2Model(tinyQwen2Config({ vocabSize: 48 }), 21, cpu);
        const result = await train(model, examples, { ...settings, ...(layerTokenChunk !== undefined ? { layerTokenChunk } : {}) },
          { outDir: path.join(dir, name), log: () => {} }, async () => {});
        const chunk = model.layerTokenChunk;
        model.dispose();
        return { metrics: result.metrics, chunk };
      };
      const whole = await run(0, 'whole');
      const chunked = await run(3, 'chunked');
      const byDefault = await run(undefined, 'default');
      expect([whole.chunk, chunked.chunk, byDefault.chunk]).toEqual([0, 3, DEFAULT_LAYER_TOKEN_CHUNK]);
      expectClose(chunked.metrics.map((m) => m.loss), whole.metrics.map((m) => m.loss), { rtol: 1e-5 }, 'losses');
      expectClose(chunked.metrics.map((m) => m.gradNorm), whole.metrics.map((m) => m.gradNorm), { rtol: 1e-4 }, 'gradient norms');
      // Blocks shorter than the default chunk run whole: the very same numbers.
      expect(byDefault.metrics.map((m) => [m.loss, m.gradNorm])).toEqual(whole.metrics.map((m) => [m.loss, m.gradNorm]));
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
