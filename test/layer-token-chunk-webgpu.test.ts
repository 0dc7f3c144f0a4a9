// Qwen2Model.layerTokenChunk on the WebGPU backend: the token-chunked MLP sub-blocks (strided chunk views, the
// chunk outputs and gradients written into one buffer with assign) give the loss and adapter gradients of whole
// layers, and a lower peak of allocated device bytes. Skips without an adapter (test/webgpu-helpers.ts).
import { describe, expect, it } from 'vitest';
import type { Backend } from '../src/kernels/backend.ts';
import { backward } from '../src/tensor/autograd.ts';
import { div, tidy } from '../src/tensor/index.ts';
import { randomQwen2Model, randomRankOneAdapters, tinyQwen2Config } from '../src/model/random-model.ts';
import { makeBatch, type Batch } from '../src/train/data-batch.ts';
import { batchLossSum } from '../src/train/trainer.ts';
import { expectClose, probeForTests, registerRequiredFailure } from './webgpu-helpers.ts';

const probe = await probeForTests('layer-token-chunk-webgpu');
registerRequiredFailure(probe.reason);

const config = tinyQwen2Config({ hiddenSize: 32, intermediateSize: 256, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: 64, numHiddenLayers: 2 });

function batchOf(rows: number, tokens: number): Batch {
  return makeBatch(Array.from({ length: rows }, (_, r) => ({
    inputIds: Int32Array.from({ length: tokens }, (_, i) => (i * 7919 + r * 104729 + 13) % config.vocabSize),
    lossMask: new Uint8Array(tokens).fill(1),
  })), 0);
}

/** Loss, adapter gradients and the step's peak of live device bytes (less what was live before). */
async function step(backend: Backend, batch: Batch, chunk: number | null) {
  const model = randomQwen2Model(config, 5, backend);
  model.adapters = randomRankOneAdapters(model.dims, 6, backend, 0.2);
  model.gradientCheckpointing = true;
  model.checkpointDtype = 'bf16';
  model.layerTokenChunk = chunk;
  const before = backend.memory().liveBytes;
  backend.resetPeak();
  const loss = tidy(() => div(batchLossSum(model, batch, 8), batch.tokens));
  backward(loss);
  const peak = backend.memory().peakBytes - before;
  const value = await loss.item();
  loss.dispose();
  const grads = await Promise.all(model.adapters.parameters().map((p) => p.grad!.toFloat32Array()));
  for (const p of model.adapters.parameters()) p.grad?.dispose();
  model.adapters.dispose();
  model.dispose();
  return { loss: value, grads, peak };
}

describe.skipIf(!probe.backend)('Qwen2Model.layerTokenChunk on WebGPU', () => {
  it('equals whole layers (13 tokens in chunks of 4, batch 2), with a lower device peak at 96 tokens', async () => {
    const gpu = probe.backend!;
    const whole = await step(gpu, batchOf(2, 13), null);
    const chunked = await step(gpu, batchOf(2, 13), 4);
    expectClose([chunked.loss], [whole.loss], { rtol: 1e-5 }, 'loss');
    chunked.grads.forEach((g, i) => expectClose(g, whole.grads[i]!, { rtol: 1e-3, scaledAtol: 1e-4 }, `adapter grad ${i}`));
    const wholePeak = (await step(gpu, batchOf(1, 96), null)).peak;
    const chunkedPeak = (await step(gpu, batchOf(1, 96), 8)).peak;
    // At least two f32 [T, I] MLP intermediates (96 · 256 · 4 bytes each) less at the peak.
    expect(wholePeak - chunkedPeak).toBeGreaterThan(2 * 96 * 256 * 4);
  });
});
