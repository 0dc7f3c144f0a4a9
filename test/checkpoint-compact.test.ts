// Compact activations (issue 18, must 2) measured on the backend's own count of live storage bytes: a
// checkpointed forward holds each layer's kept input (bf16: 2 bytes per element) and nothing else per layer —
// no f32 layer output waiting for the forward to return — and the gradients stay those of the plain backward.
import { describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { backward, noGrad } from '../src/tensor/autograd.ts';
import { tidy } from '../src/tensor/tensor.ts';
import { randomQwen2Model, randomRankOneAdapters, tinyQwen2Config } from '../src/model/random-model.ts';
import type { Qwen2Model } from '../src/model/qwen2.ts';
import { makeBatch, type Batch } from '../src/train/data-batch.ts';
import { batchLossSum } from '../src/train/trainer.ts';
import { disposeAdaptedModel } from './helpers/adapted-model.ts';

const cpu = getCpuBackend();
const shape = { hiddenSize: 64, intermediateSize: 128, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16, vocabSize: 96 };

function batchOf(rows: number, tokens: number, vocab: number): Batch {
  return makeBatch(Array.from({ length: rows }, (_, r) => ({
    inputIds: Int32Array.from({ length: tokens }, (_, i) => (i * 7919 + r * 104729 + 13) % vocab),
    lossMask: new Uint8Array(tokens).fill(1),
  })), 0);
}

function modelWith(layers: number, setup: (model: Qwen2Model) => void): Qwen2Model {
  const model = randomQwen2Model(tinyQwen2Config({ ...shape, numHiddenLayers: layers }), 3, cpu);
  model.adapters = randomRankOneAdapters(model.dims, 4, cpu);
  setup(model);
  return model;
}

/** Live bytes the forward leaves held (the graph's checkpoints and the final hidden states) and the forward's peak. */
function forwardHeld(layers: number, batch: Batch, dtype: 'f32' | 'bf16'): { held: number; peak: number } {
  const model = modelWith(layers, (m) => {
    m.gradientCheckpointing = true;
    m.checkpointDtype = dtype;
  });
  const before = cpu.memory().liveBytes;
  cpu.resetPeak();
  const loss = batchLossSum(model, batch, 16);
  const held = cpu.memory().liveBytes - before;
  const peak = cpu.memory().peakBytes - before;
  backward(loss);
  loss.dispose();
  disposeAdaptedModel(model);
  return { held, peak };
}

describe('a checkpointed forward holds one kept input per layer', () => {
  const batch = batchOf(2, 48, shape.vocabSize);
  const layerInput = batch.batch * batch.seqLen * shape.hiddenSize; // elements of one [B, T, H]

  for (const dtype of ['bf16', 'f32'] as const) {
    it(`${dtype}: each extra layer adds one ${dtype} [B, T, H] to what the forward holds and to its peak`, () => {
      const few = forwardHeld(2, batch, dtype);
      const many = forwardHeld(10, batch, dtype);
      const bytes = dtype === 'bf16' ? 2 : 4;
      // Exactly the kept copies: the old forward also held each layer's f32 output (4 more bytes per element).
      expect((many.held - few.held) / 8).toBe(bytes * layerInput);
      expect((many.peak - few.peak) / 8).toBe(bytes * layerInput);
    });
  }

  it('gradients and loss equal the plain backward (f32 checkpoints exactly, bf16 within its rounding)', async () => {
    const run = async (setup: (model: Qwen2Model) => void) => {
      const model = modelWith(4, setup);
      const loss = batchLossSum(model, batch, 16);
      const value = await loss.item();
      backward(tidy(() => loss));
      loss.dispose();
      const grads = await Promise.all(model.adapters!.parameters().map((p) => p.grad!.toFloat32Array()));
      disposeAdaptedModel(model);
      return { value, grads };
    };
    const plain = await run((m) => {
      m.gradientCheckpointing = false;
    });
    const f32 = await run((m) => {
      m.gradientCheckpointing = true;
      m.checkpointDtype = 'f32';
    });
    const bf16 = await run((m) => {
      m.gradientCheckpointing = true;
      m.checkpointDtype = 'bf16';
    });
    expect(f32.value).toBe(plain.value);
    expect(bf16.value).toBe(plain.value);
    const scale = Math.max(...plain.grads.flatMap((g) => Array.from(g, Math.abs)));
    plain.grads.forEach((g, i) => {
      for (let j = 0; j < g.length; j++) {
        expect(Math.abs(f32.grads[i]![j]! - g[j]!)).toBeLessThanOrEqual(1e-5 * scale);
        expect(Math.abs(bf16.grads[i]![j]! - g[j]!)).toBeLessThanOrEqual(2e-2 * scale);
      }
    });
  });

  it('without a graph, the forward holds one layer at a time: its peak does not grow with depth', () => {
    const peakOf = (layers: number) => {
      const model = modelWith(layers, (m) => {
        m.gradientCheckpointing = true;
      });
      const before = cpu.memory().liveBytes;
      cpu.resetPeak();
      const loss = noGrad(() => batchLossSum(model, batch, 16));
      const peak = cpu.memory().peakBytes - before;
      loss.dispose();
      disposeAdaptedModel(model);
      return peak;
    };
    // The old forward kept every layer's f32 output until it returned: 8 more layers, 8 more [B, T, H].
    expect(peakOf(10) - peakOf(2)).toBe(0);
  });
});
