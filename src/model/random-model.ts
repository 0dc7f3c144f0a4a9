// Random Qwen2 models: for tests (tiny checkpoints made on the fly) and benchmarks (a Qwen2.5-0.5B-shaped
// model in bf16 without downloading anything). Projection weights ~ N(0, std²), norms ~ 1 ± 0.1.
import type { Backend, FloatDType } from '../kernels/backend.ts';
import { keep, type Tensor } from '../tensor/tensor.ts';
import { tensor } from '../tensor/ops.ts';
import { Random, randomNormalArray } from '../tensor/random.ts';
import { expectedQwen2Tensors, type Qwen2Config } from './config.ts';
import { writeCheckpoint } from './checkpoint.ts';
import type { Qwen2Dims, Qwen2Model } from './qwen2.ts';
import { LoraAdapters, projectionDims } from './lora.ts';
import { qwen2FromTensors } from './load.ts';

/** Qwen2.5-0.5B's architecture (config.json of Qwen/Qwen2.5-0.5B-Instruct). */
export const QWEN25_05B: Qwen2Config = {
  hiddenSize: 896, intermediateSize: 4864, numHiddenLayers: 24, numAttentionHeads: 14, numKeyValueHeads: 2,
  headDim: 64, vocabSize: 151936, maxPositionEmbeddings: 32768, ropeTheta: 1000000, rmsNormEps: 1e-6,
  tieWordEmbeddings: true, torchDtype: 'bfloat16',
};

/** A small config for tests: every feature (GQA, biases, untied head) at toy sizes. */
export function tinyQwen2Config(overrides: Partial<Qwen2Config> = {}): Qwen2Config {
  return {
    hiddenSize: 32, intermediateSize: 48, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8,
    vocabSize: 64, maxPositionEmbeddings: 512, ropeTheta: 10000, rmsNormEps: 1e-6, tieWordEmbeddings: false,
    torchDtype: 'float32', ...overrides,
  };
}

/** Every tensor of a random checkpoint of `config`, by name, in `dtype`. */
export function randomQwen2Tensors(config: Qwen2Config, seed: number, backend: Backend, dtype: FloatDType = 'f32', std = 0.2): Map<string, Tensor> {
  const rng = new Random(seed);
  const out = new Map<string, Tensor>();
  for (const { name, shape } of expectedQwen2Tensors(config)) {
    const numel = shape.reduce((a, b) => a * b, 1);
    const isNorm = name.endsWith('norm.weight');
    const data = isNorm
      ? Float32Array.from({ length: numel }, () => 1 + 0.1 * rng.range(-1, 1))
      : randomNormalArray(numel, rng, name.includes('embed_tokens') ? 1 : std);
    out.set(name, keep(tensor(data, shape, { backend, dtype })));
  }
  return out;
}

/** A random Qwen2Model held in memory (nothing written to disk). */
export function randomQwen2Model(config: Qwen2Config, seed: number, backend: Backend, dtype: FloatDType = 'f32', std = 0.2): Qwen2Model {
  return qwen2FromTensors(config, randomQwen2Tensors(config, seed, backend, dtype, std), backend, 'random model');
}

/** Writes a random checkpoint folder (config.json + safetensors, optionally sharded). */
export async function writeRandomQwen2Checkpoint(
  dir: string, config: Qwen2Config, seed: number, backend: Backend, options: { dtype?: FloatDType; shards?: number } = {},
): Promise<void> {
  const dtype = options.dtype ?? 'f32';
  const tensors = randomQwen2Tensors(config, seed, backend, dtype);
  try {
    await writeCheckpoint(dir, { ...config, torchDtype: dtype === 'f32' ? 'float32' : dtype === 'bf16' ? 'bfloat16' : 'float16' }, tensors, { dtype, shards: options.shards ?? 1 });
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}

/** Random bf16 bits for n weights, uniform in ±scale, by a fast LCG (the values only need to be sane). */
function fastRandomBf16(n: number, scale: number, seed: number): Uint16Array {
  const out = new Uint16Array(n);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  let state = seed >>> 0;
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    f[0] = ((state / 4294967296) * 2 - 1) * scale;
    out[i] = u[0]! >>> 16;
  }
  return out;
}

/**
 * A large random bf16 model made quickly (an LCG straight to bf16 bits, no f32 copy): for benchmarks of
 * real-sized shapes such as QWEN25_05B. Norm weights ≈ 1, projections ±0.02, embeddings ±0.05.
 */
export function fastRandomBf16Qwen2Model(config: Qwen2Config, backend: Backend): Qwen2Model {
  const tensors = new Map<string, Tensor>();
  let seed = 1;
  for (const { name, shape } of expectedQwen2Tensors(config)) {
    const numel = shape.reduce((a, b) => a * b, 1);
    const data = name.endsWith('norm.weight') ? fastRandomBf16(numel, 0.05, seed++).map((b) => b | 0x3f80) : fastRandomBf16(numel, name.includes('embed') ? 0.05 : 0.02, seed++);
    tensors.set(name, keep(tensor(data, shape, { backend, dtype: 'bf16' })));
  }
  return qwen2FromTensors(config, tensors, backend, 'random bf16 model');
}

/**
 * Rank-1 adapters on all 7 projections of every layer with random non-zero B (U(±bScale)), so that they change
 * the model's output (PEFT's init leaves B at zero): for tests and benchmarks.
 */
export function randomRankOneAdapters(dims: Qwen2Dims, seed: number, backend: Backend, bScale = 0.02): LoraAdapters {
  const adapters = LoraAdapters.initialize(dims.layers, projectionDims(dims.hidden, dims.intermediate, dims.heads, dims.kvHeads, dims.headDim), new Random(seed), backend);
  const rng = new Random(seed + 1);
  for (const { b } of adapters.adapters.values()) {
    const replacement = tensor(Float32Array.from({ length: b.size }, () => rng.range(-bScale, bScale)), b.shape, { backend });
    backend.assign(b, replacement);
    replacement.dispose();
  }
  return adapters;
}
