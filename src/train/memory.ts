// A before-training estimate of peak memory, so that a run that cannot fit is refused up front rather than
// dying hours in. Sizes in bytes; activations in f32. Legend: B micro-batch, T tokens, H hidden,
// I intermediate, V vocab, L layers.
import type { Qwen2Dims } from '../model/qwen2.ts';
import { defaultLossChunkRows } from '../tensor/linear-cross-entropy.ts';

export interface MemoryEstimate {
  /** Frozen weights in their storage dtype (or f32 copies for --full). */
  weights: number;
  /** Trainable parameters, their gradients and the two AdamW moments (4 f32 values each). */
  optimizer: number;
  /** The step's peak of live activation bytes: the larger of its two phases (`terms`). */
  activations: number;
  total: number;
  /** What `activations` is made of (bytes), so that it can be checked term by term against a measurement. */
  terms: ActivationTerms;
}

/**
 * The phases of a checkpointed step whose largest is its peak (measured: test/memory-estimate.test.ts,
 * bench/results/2026-12-07-memory-calibration.json). All three hold every layer's checkpointed input.
 */
export interface ActivationTerms {
  /** Every layer's checkpointed input [B·T, H] in the checkpoint dtype (or, without checkpointing, every layer's saved intermediates). */
  checkpoints: number;
  /**
   * The forward's last layer: its intermediates without a graph, f32, and with bf16 checkpoints also every
   * layer's f32 output, which the forward keeps until it returns (so bf16 lowers the backward's peak, not the
   * forward's).
   */
  forward: number;
  /** The loss phase: two [chunk, V] f32 buffers (a chunk's logits and their gradient) plus the final hidden states, their norm and dL/dh, [B·T, H] f32 each. */
  loss: number;
  /** The layer phase: one layer recomputed with its graph and run backward, over all B·T rows, f32. */
  layer: number;
  /** Which phase is the peak. */
  peak: 'forward' | 'loss' | 'layer';
}

export interface TrainingMemoryOptions {
  /** Rows per chunk of the loss (default: defaultLossChunkRows(V)). */
  lossChunk?: number;
  /** The dtype checkpointed layer inputs are kept in (default 'f32'). */
  checkpointDtype?: 'f32' | 'bf16';
}

/**
 * f32 values per token that one layer's recompute + backward holds at its peak (measured on the CPU backend
 * by fitting the backend's high-water mark of live storages over H, I, heads·headDim, kvHeads·headDim and
 * headDim: test/memory-estimate.test.ts): the saved intermediates of the forward (the norms' outputs, q, k, v
 * and their RoPE'd copies, the attention output, o, the residual, gate, up and their SwiGLU, down) with the
 * gradients alive at the same time — 9 [T, H], 8 [T, I], 4 [T, heads·hd], 5 [T, kv·hd] — plus the RoPE tables
 * ([T, hd]) and about 30 per-token scalars (the seven adapters' [T, 1] projections, norm and attention
 * statistics).
 */
export function layerBackwardValuesPerToken(dims: Pick<Qwen2Dims, 'hidden' | 'intermediate' | 'heads' | 'kvHeads' | 'headDim'>): number {
  const { hidden: H, intermediate: I, heads, kvHeads, headDim } = dims;
  return 9 * H + 8 * I + 4 * heads * headDim + 5 * kvHeads * headDim + headDim + 30;
}

/**
 * f32 values per token that one layer's forward without a graph holds at its peak (measured as above): 7.5
 * [T, H], 5 [T, I], 4 [T, heads·hd], 5 [T, kv·hd], the RoPE tables and about 22 per-token scalars.
 */
export function layerForwardValuesPerToken(dims: Pick<Qwen2Dims, 'hidden' | 'intermediate' | 'heads' | 'kvHeads' | 'headDim'>): number {
  const { hidden: H, intermediate: I, heads, kvHeads, headDim } = dims;
  return 7.5 * H + 5 * I + 4 * heads * headDim + 5 * kvHeads * headDim + headDim + 22;
}

export function estimateTrainingMemory(
  dims: Qwen2Dims, weightBytes: number, trainableParameters: number, microBatch: number, tokens: number, checkpointing: boolean,
  options: TrainingMemoryOptions = {},
): MemoryEstimate {
  const { hidden: H, vocab: V, layers: L } = dims;
  const rows = microBatch * tokens;
  const lossChunk = options.lossChunk ?? defaultLossChunkRows(V);
  const bf16 = checkpointing && options.checkpointDtype === 'bf16';
  const layerValues = layerBackwardValuesPerToken(dims);
  // Checkpointing keeps each layer's input; bf16 ones are cast back to an f32 copy for the layer being
  // recomputed (the f32 ones are reused as they are).
  const checkpoints = checkpointing ? (bf16 ? 2 : 4) * rows * H * L : 4 * rows * layerValues * L;
  const forward = 4 * rows * (layerForwardValuesPerToken(dims) + (bf16 ? H * L : 0));
  // The loss runs from the final hidden states in chunks (tensor/linear-cross-entropy.ts): one chunk's logits
  // and their gradient [c, V], plus three [B·T, H] (the final hidden states, their norm, dL/dh) and a few
  // per-token scalars (targets, mask, log-sum-exp). No [B·T, V] term.
  const loss = 4 * Math.min(rows, lossChunk) * V * 2 + 4 * rows * (3 * H + 24);
  const layer = checkpointing ? 4 * rows * (layerValues + (bf16 ? H : 0)) : 0;
  const peakPhase = Math.max(forward, loss, layer);
  const activations = checkpoints + peakPhase;
  const optimizer = 4 * 4 * trainableParameters;
  return {
    weights: weightBytes, optimizer, activations, total: weightBytes + optimizer + activations,
    terms: { checkpoints, forward, loss, layer, peak: peakPhase === layer ? 'layer' : peakPhase === loss ? 'loss' : 'forward' },
  };
}

/**
 * A forward without gradients (rank1 extract, the ablation's full run): the residual stream and one layer's
 * intermediates at a time, T · (6H + 3I) f32 (as defaultAblationBatch counts them), and one [chunk, V] chunk
 * of logits where the loss or KL is read (no [T, V] logits). Not measured: the figure `rank1 info` prints.
 */
export function estimateForwardActivations(dims: Pick<Qwen2Dims, 'hidden' | 'intermediate' | 'vocab'>, tokens: number, lossChunk = defaultLossChunkRows(dims.vocab)): number {
  return 4 * tokens * (6 * dims.hidden + 3 * dims.intermediate) + 4 * Math.min(tokens, lossChunk) * dims.vocab;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 2)} ${units[unit]}`;
}
