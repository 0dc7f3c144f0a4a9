// Pretraining from scratch: a fresh Qwen2-architecture model initialised as Hugging Face does
// (Qwen2PreTrainedModel._init_weights: every Linear and the embedding ~ N(0, initializer_range²) with
// initializer_range 0.02, biases 0, RMSNorm weights 1), then trained in full by the ordinary trainer.
import type { Backend } from '../kernels/backend.ts';
import { keep, type Tensor } from '../tensor/tensor.ts';
import { tensor } from '../tensor/ops.ts';
import { Random, randomNormalArray } from '../tensor/random.ts';
import { expectedQwen2Tensors, type Qwen2Config } from '../model/config.ts';
import { qwen2FromTensors } from '../model/load.ts';
import type { Qwen2Model } from '../model/qwen2.ts';

/** transformers' Qwen2Config.initializer_range default. */
export const HF_INITIALIZER_RANGE = 0.02;

/** The architecture flags of `rank1 pretrain` (everything else of the config follows from them). */
export interface ArchitectureOptions {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocabSize: number;
  maxPositions: number;
  ropeTheta: number;
}

/** A tied-embedding Qwen2 config (as the small Qwen2.5 models are), f32 while training. */
export function pretrainConfig(a: ArchitectureOptions): Qwen2Config {
  const problems: string[] = [];
  for (const key of ['layers', 'hidden', 'heads', 'kvHeads', 'intermediate', 'vocabSize', 'maxPositions'] as const) {
    if (!Number.isInteger(a[key]) || a[key] < 1) problems.push(`--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} must be a positive integer (got ${a[key]})`);
  }
  if (problems.length === 0) {
    if (a.hidden % a.heads !== 0) problems.push(`--hidden ${a.hidden} is not divisible by --heads ${a.heads}`);
    else if ((a.hidden / a.heads) % 2 !== 0) problems.push(`the head dimension ${a.hidden / a.heads} must be even for RoPE`);
    if (a.heads % a.kvHeads !== 0) problems.push(`--heads ${a.heads} is not a multiple of --kv-heads ${a.kvHeads}`);
  }
  if (problems.length > 0) throw new RangeError(`pretrain: ${problems.join('; ')}`);
  return {
    hiddenSize: a.hidden, intermediateSize: a.intermediate, numHiddenLayers: a.layers, numAttentionHeads: a.heads,
    numKeyValueHeads: a.kvHeads, headDim: a.hidden / a.heads, vocabSize: a.vocabSize, maxPositionEmbeddings: a.maxPositions,
    ropeTheta: a.ropeTheta, rmsNormEps: 1e-6, tieWordEmbeddings: true, torchDtype: 'float32',
  };
}

/** Every tensor of a freshly initialised model, by checkpoint name, in f32. */
export function initialQwen2Tensors(config: Qwen2Config, seed: number, backend: Backend, std = HF_INITIALIZER_RANGE): Map<string, Tensor> {
  const rng = new Random(seed);
  const out = new Map<string, Tensor>();
  for (const { name, shape } of expectedQwen2Tensors(config)) {
    const numel = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (name.endsWith('norm.weight')) data = new Float32Array(numel).fill(1);
    else if (name.endsWith('.bias')) data = new Float32Array(numel);
    else data = randomNormalArray(numel, rng, std);
    out.set(name, keep(tensor(data, shape, { backend })));
  }
  return out;
}

export function initialQwen2Model(config: Qwen2Config, seed: number, backend: Backend): Qwen2Model {
  return qwen2FromTensors(config, initialQwen2Tensors(config, seed, backend), backend, 'a freshly initialised model');
}
