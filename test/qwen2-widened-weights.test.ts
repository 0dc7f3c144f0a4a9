// Qwen2Model keeps an f32 widening of each half-precision bias and RMSNorm weight (src/model/qwen2.ts, widened)
// so that linear and rmsNorm do not widen them on every call: the forward is bit-identical to one whose biases
// and norms were f32 from the start, the weights keep their own dtype, the widenings are made once and freed
// with the model, and a weight replaced by another (as full finetuning does) is the one used from then on.
import { describe, expect, it } from 'vitest';
import { createCpuBackend } from '../src/kernels/cpu/index.ts';
import { cast, tensor } from '../src/tensor/ops.ts';
import { keep, tidy } from '../src/tensor/tensor.ts';
import { noGrad } from '../src/tensor/autograd.ts';
import { KVCache, type Qwen2Model } from '../src/model/qwen2.ts';
import { qwen2FromTensors } from '../src/model/load.ts';
import { randomQwen2Tensors, tinyQwen2Config } from '../src/model/random-model.ts';
import type { Backend } from '../src/kernels/backend.ts';

const config = tinyQwen2Config();

/** Biases and norm weights: the vectors the model widens. */
const isWidened = (name: string) => name.endsWith('.bias') || name.endsWith('norm.weight');

function bf16Model(backend: Backend, vectorsInF32: boolean): Qwen2Model {
  const tensors = randomQwen2Tensors(config, 11, backend, 'bf16');
  if (vectorsInF32) {
    for (const [name, t] of tensors) {
      if (!isWidened(name)) continue;
      tensors.set(name, keep(cast(t, 'f32')));
      t.dispose();
    }
  }
  return qwen2FromTensors(config, tensors, backend, 'test model');
}

/** Logits of a 5-token prompt and then 3 decoded tokens through a KV cache. */
async function run(model: Qwen2Model, backend: Backend): Promise<Float32Array[]> {
  const cache = new KVCache(model.dims, 1, backend, 4);
  const out: Float32Array[] = [];
  for (const ids of [[3, 9, 27, 1, 60], [5], [44], [12]]) {
    const logits = tidy(() => noGrad(() => model.forward(tensor(Int32Array.from(ids), [1, ids.length], { backend, dtype: 'i32' }), { cache })));
    out.push(await logits.toFloat32Array());
    logits.dispose();
  }
  cache.dispose();
  return out;
}

describe('Qwen2Model half-precision biases and norm weights', () => {
  it('forward and decode are bit-identical to the same model with f32 biases and norms; the weights stay bf16', async () => {
    const backend = createCpuBackend();
    const model = bf16Model(backend, false);
    const reference = bf16Model(backend, true);
    expect(model.weights.layers[0]!.qProj.bias!.dtype).toBe('bf16');
    expect(reference.weights.layers[0]!.qProj.bias!.dtype).toBe('f32');
    expect(reference.weights.layers[0]!.inputLayernorm.dtype).toBe('f32');
    const [got, want] = [await run(model, backend), await run(reference, backend)];
    got.forEach((logits, i) => expect(logits).toEqual(want[i]));
    expect(model.weights.layers[0]!.qProj.bias!.dtype).toBe('bf16');
    expect(model.weights.layers[1]!.postAttentionLayernorm.dtype).toBe('bf16');
    expect(model.weights.norm.dtype).toBe('bf16');
    model.dispose();
    reference.dispose();
  });

  it('widens each once (no storage more after further forwards) and frees the widenings with the model', async () => {
    const backend = createCpuBackend();
    const before = backend.memory().liveStorages;
    const model = bf16Model(backend, false);
    const loaded = backend.memory().liveStorages;
    await run(model, backend);
    const widened = config.numHiddenLayers * (3 + 2) + 1; // q/k/v biases and two norms a layer, the final norm
    expect(backend.memory().liveStorages).toBe(loaded + widened);
    await run(model, backend);
    expect(backend.memory().liveStorages).toBe(loaded + widened);
    model.dispose();
    expect(backend.memory().liveStorages).toBe(before);
  });

  it('uses a replaced bias from then on, and frees the widening of the one it replaced', async () => {
    const backend = createCpuBackend();
    const model = bf16Model(backend, false);
    const first = await run(model, backend);
    const layer = model.weights.layers[1]!;
    const storagesBefore = backend.memory().liveStorages;
    const replacement = keep(tensor(new Float32Array(layer.vProj.bias!.size).fill(0.5), [layer.vProj.bias!.size], { backend, dtype: 'bf16' }));
    layer.vProj.bias!.dispose();
    layer.vProj.bias = replacement;
    const second = await run(model, backend);
    expect(second[0]).not.toEqual(first[0]);
    // The old bias and its widening gone, the new bias and its widening there.
    expect(backend.memory().liveStorages).toBe(storagesBefore);
    const reference = bf16Model(backend, true);
    reference.weights.layers[1]!.vProj.bias!.dispose();
    reference.weights.layers[1]!.vProj.bias = keep(tensor(new Float32Array(replacement.size).fill(0.5), [replacement.size], { backend }));
    const want = await run(reference, backend);
    second.forEach((logits, i) => expect(logits).toEqual(want[i]));
    model.dispose();
    reference.dispose();
  });
});
