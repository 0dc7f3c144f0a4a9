// Qwen2Model.layerTokenChunk on the WebGPU backend: the token-chunked layers (strided chunk views, each chunk's
// queries attending to the keys up to its end, the chunk outputs and gradients written into one buffer with
// assign) give the loss and adapter gradients of whole layers, and a lower peak of allocated device bytes, both
// for the MLP's [T, I] and the attention sub-block's [T, H] intermediates. Skips without an adapter
// (test/webgpu-helpers.ts).
import { describe, expect, it } from 'vitest';
import type { Backend } from '../src/kernels/backend.ts';
import { backward } from '../src/tensor/autograd.ts';
import { div, tidy } from '../src/tensor/index.ts';
import { hookName } from '../src/model/hooks.ts';
import { withHooks } from '../src/model/hook-registry.ts';
import { randomQwen2Model, randomRankOneAdapters, tinyQwen2Config } from '../src/model/random-model.ts';
import { makeBatch, type Batch } from '../src/train/data-batch.ts';
import { batchLossSum } from '../src/train/trainer.ts';
import { expectClose, probeForTests, registerRequiredFailure } from './webgpu-helpers.ts';
import { disposeAdaptedModel } from './helpers/adapted-model.ts';

const probe = await probeForTests('layer-token-chunk-webgpu');
registerRequiredFailure(probe.reason);

const config = tinyQwen2Config({ hiddenSize: 32, intermediateSize: 256, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: 64, numHiddenLayers: 2 });

function batchOf(rows: number, tokens: number): Batch {
  return makeBatch(Array.from({ length: rows }, (_, r) => ({
    inputIds: Int32Array.from({ length: tokens }, (_, i) => (i * 7919 + r * 104729 + 13) % config.vocabSize),
    lossMask: new Uint8Array(tokens).fill(1),
  })), 0);
}

/**
 * Loss, adapter gradients and the step's peak of live device bytes (less what was live before); with `hooks`,
 * under those no-op hooks (a hooked sub-block runs whole).
 */
async function step(backend: Backend, batch: Batch, chunk: number | null, modelConfig = config, hooks: string[] = []) {
  const model = randomQwen2Model(modelConfig, 5, backend);
  model.adapters = randomRankOneAdapters(model.dims, 6, backend, 0.2);
  model.gradientCheckpointing = true;
  model.checkpointDtype = 'bf16';
  model.layerTokenChunk = chunk;
  const { loss, peak } = withHooks(model, hooks.map((name) => [name, () => {}] as [string, () => void]), () => {
    const before = backend.memory().liveBytes;
    backend.resetPeak();
    const lossSum = tidy(() => div(batchLossSum(model, batch, 8), batch.tokens));
    backward(lossSum);
    return { loss: lossSum, peak: backend.memory().peakBytes - before };
  });
  const value = await loss.item();
  loss.dispose();
  const grads = await Promise.all(model.adapters.parameters().map((p) => p.grad!.toFloat32Array()));
  disposeAdaptedModel(model);
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

  it('the attention sub-block in chunks: a lower device peak than with it whole (wide H, narrow I)', async () => {
    const gpu = probe.backend!;
    const wide = tinyQwen2Config({ hiddenSize: 128, intermediateSize: 64, numAttentionHeads: 4, numKeyValueHeads: 1, headDim: 32, vocabSize: 64, numHiddenLayers: 2 });
    const tokens = 96;
    // A no-op hook on resid_mid runs each layer's attention sub-block whole (the MLP still in chunks).
    const wholeAttention = (await step(gpu, batchOf(1, tokens), 8, wide, [hookName.residMid(0), hookName.residMid(1)])).peak;
    const chunked = (await step(gpu, batchOf(1, tokens), 8, wide)).peak;
    // Whole, the recompute holds several f32 [T, H] tensors (normed input, q, rotated q, attention output,
    // o_proj's output, their gradients); at least four of them are gone in chunks of 8.
    expect(wholeAttention - chunked).toBeGreaterThan(4 * tokens * 128 * 4);
  });
});
