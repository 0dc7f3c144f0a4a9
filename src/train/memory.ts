// A before-training estimate of peak memory, so that a run that cannot fit is refused up front rather than
// dying hours in; and the same for extraction and the ablation batch (bench/real-model-memory.ts sets them out
// for the real Qwen2.5 sizes). Every term is fitted to the backends' measured high-water marks of live bytes
// (test/memory-estimate*.test.ts, test/memory-forward-estimate.test.ts). Sizes in bytes; activations in f32. Legend: B micro-batch, T tokens, H hidden,
// I intermediate, V vocab, L layers.
import type { Qwen2Dims } from '../model/qwen2.ts';
import { defaultLossChunkRows } from '../tensor/linear-cross-entropy.ts';

export interface MemoryEstimate {
  /** Frozen weights in their storage dtype (or f32 copies for --full). */
  weights: number;
  /** Trainable parameters, their gradients and the two AdamW moments (4 f32 values each). */
  optimizer: number;
  /** The step's peak of live activation bytes on the device: the checkpoints plus the largest phase (`terms`). */
  activations: number;
  /** Device bytes: weights + optimizer + activations. */
  total: number;
  /** Host bytes the step adds: the offloaded checkpoints (0 without --offload-checkpoints). */
  host: number;
  /** What `activations` is made of (bytes), so that it can be checked term by term against a measurement. */
  terms: ActivationTerms;
}

/**
 * The phases of a checkpointed step whose largest is its peak (measured: test/memory-estimate.test.ts,
 * bench/results/2026-12-07-memory-calibration.json). All three hold every layer's checkpointed input.
 */
export interface ActivationTerms {
  /**
   * Every layer's checkpointed input [B·T, H] in the checkpoint dtype kept on the device (0 when they are
   * offloaded to the host), or, without checkpointing, every layer's saved intermediates.
   */
  checkpoints: number;
  /** The forward's current layer: its intermediates without a graph, f32 (the previous layer's f32 output is freed once read). */
  forward: number;
  /**
   * The loss phase: two [chunk, V] f32 buffers (a chunk's logits and their gradient) plus the final hidden
   * states, their norm and dL/dh, [B·T, H] f32 each; on a WebGPU CPU adapter, a chunk's logits beside a
   * transposed copy of the LM head where that is larger than the gradient.
   */
  loss: number;
  /** The layer phase: one layer recomputed with its graph and run backward, f32 (its token-wise parts over one token chunk). */
  layer: number;
  /** Which phase is the peak. */
  peak: 'forward' | 'loss' | 'layer';
}

/** The checkpoint dtype when none is given: Qwen2Model.checkpointDtype's default (a test keeps them equal). */
export const DEFAULT_CHECKPOINT_DTYPE = 'bf16';

export interface TrainingMemoryOptions {
  /** Rows per chunk of the loss (default: defaultLossChunkRows(V)). */
  lossChunk?: number;
  /** The dtype checkpointed layer inputs are kept in (default DEFAULT_CHECKPOINT_DTYPE, as the model's). */
  checkpointDtype?: 'f32' | 'bf16';
  /**
   * Qwen2Model.layerTokenChunk (--layer-chunk): tokens per chunk of a layer's token-wise parts (the MLP
   * sub-block, norms, projections, each chunk of queries), so that only the layer's input and output, their
   * gradients and the keys and values span all T tokens.
   * null or absent: one chunk of all T.
   */
  layerTokenChunk?: number | null;
  /** Qwen2Model.offloadCheckpoints (--offload-checkpoints): the layer inputs live on the host, not the device. */
  offloadCheckpoints?: boolean;
  /**
   * WebGPU on a CPU adapter (lavapipe, llvmpipe): its streaming matmul transposes an [n, k] weight to [k, n]
   * before every product of 16 rows or more (src/kernels/webgpu/matmul.ts), so each loss chunk's logits are
   * computed beside a transposed copy of the LM head, this many bytes per value (2 for a bf16 head). 0 (the
   * default) for the CPU backend and GPU adapters.
   */
  transposedHeadBytesPerValue?: number;
}

type LayerDims = Pick<Qwen2Dims, 'hidden' | 'intermediate' | 'heads' | 'kvHeads' | 'headDim'>;

/**
 * f32 values per token that one layer's recompute + backward holds at its peak (measured on the CPU backend
 * by fitting the backend's high-water mark of live storages over H, I, heads·headDim, kvHeads·headDim and
 * headDim: test/memory-estimate.test.ts): the saved intermediates of the forward (the norms' outputs, q, k, v
 * and their RoPE'd copies, the attention output, o, the residual, gate, up and their SwiGLU, down) with the
 * gradients alive at the same time — 9 [T, H], 8 [T, I], 4 [T, heads·hd], 5 [T, kv·hd] — plus the RoPE tables
 * ([T, hd]) and about 30 per-token scalars (the seven adapters' [T, 1] projections, norm and attention
 * statistics).
 */
export function layerBackwardValuesPerToken(dims: LayerDims): number {
  const { hidden: H, intermediate: I, heads, kvHeads, headDim } = dims;
  return 9 * H + 8 * I + 4 * heads * headDim + 5 * kvHeads * headDim + headDim + 30;
}

/**
 * The part of layerBackwardValuesPerToken that spans all T tokens when the layer runs in token chunks
 * (Qwen2Model.layerTokenChunk: the recompute + backward runs the whole layer — norms, projections, each chunk's
 * queries against the keys up to its end, o_proj, the MLP — one chunk of tokens at a time): the layer output's
 * gradient and the input gradient being assembled, 2 [T, H], the keys and values [T, 2·kv·hd] with their
 * gradient accumulated over the chunks, the RoPE tables and per-token scalars. The rest is held for one chunk
 * (measured with chunks of 32 tokens at 96 and 256: 0.95-0.96 of the live peak, test/memory-estimate.test.ts).
 */
export function layerBackwardSpanningValuesPerToken(dims: LayerDims): number {
  const { hidden: H, kvHeads, headDim } = dims;
  return 2 * H + 4 * kvHeads * headDim + headDim + 32;
}

/**
 * f32 values per token that one layer's forward without a graph holds at its peak (measured as above): 7.5
 * [T, H], 5 [T, I], 4 [T, heads·hd], 5 [T, kv·hd], the RoPE tables and about 22 per-token scalars.
 */
export function layerForwardValuesPerToken(dims: LayerDims): number {
  const { hidden: H, intermediate: I, heads, kvHeads, headDim } = dims;
  return 7.5 * H + 5 * I + 4 * heads * headDim + 5 * kvHeads * headDim + headDim + 22;
}

/**
 * The forward's counterpart of layerBackwardSpanningValuesPerToken: the layer's input and the output being
 * assembled, 2 [T, H], the keys and values [T, 2·kv·hd], the RoPE tables and per-token scalars.
 */
export function layerForwardSpanningValuesPerToken(dims: LayerDims): number {
  const { hidden: H, kvHeads, headDim } = dims;
  return 2 * H + 2 * kvHeads * headDim + headDim + 16;
}

/** Bytes of a per-token figure split into a part over all `rows` and a part over `chunkRows` of them. */
function chunkedBytes(total: number, spanning: number, rows: number, chunkRows: number): number {
  return 4 * (rows * spanning + Math.min(rows, chunkRows) * (total - spanning));
}

export function estimateTrainingMemory(
  dims: Qwen2Dims, weightBytes: number, trainableParameters: number, microBatch: number, tokens: number, checkpointing: boolean,
  options: TrainingMemoryOptions = {},
): MemoryEstimate {
  const { hidden: H, vocab: V, layers: L } = dims;
  const rows = microBatch * tokens;
  const lossChunk = options.lossChunk ?? defaultLossChunkRows(V);
  const { layerTokenChunk = null, offloadCheckpoints = false, transposedHeadBytesPerValue = 0 } = options;
  if (layerTokenChunk !== null && !(Number.isInteger(layerTokenChunk) && layerTokenChunk > 0)) {
    throw new Error(`estimateTrainingMemory: layerTokenChunk must be a positive integer or null, got ${layerTokenChunk}`);
  }
  const chunkRows = layerTokenChunk === null ? rows : microBatch * layerTokenChunk;
  const bf16 = checkpointing && (options.checkpointDtype ?? DEFAULT_CHECKPOINT_DTYPE) === 'bf16';
  const layerValues = layerBackwardValuesPerToken(dims);
  // Checkpointing keeps each layer's input; bf16 ones are cast back to an f32 copy for the layer being
  // recomputed (the f32 ones are reused as they are). Offloaded, they are on the host, and the layer being
  // recomputed has its bf16 input uploaded beside that f32 copy.
  const checkpointBytes = checkpointing ? (bf16 ? 2 : 4) * rows * H * L : 4 * rows * layerValues * L;
  const offloaded = checkpointing && offloadCheckpoints;
  const checkpoints = offloaded ? 0 : checkpointBytes;
  const forward = chunkedBytes(layerForwardValuesPerToken(dims), layerForwardSpanningValuesPerToken(dims), rows, chunkRows);
  // The loss runs from the final hidden states in chunks (tensor/linear-cross-entropy.ts): one chunk's logits
  // and their gradient [c, V] (or the logits and a transposed head), plus three [B·T, H] (the final hidden
  // states, their norm, dL/dh) and a few per-token scalars (targets, mask, log-sum-exp). No [B·T, V] term.
  const logitsChunk = 4 * Math.min(rows, lossChunk) * V;
  const loss = logitsChunk + Math.max(logitsChunk, transposedHeadBytesPerValue * V * H) + 4 * rows * (3 * H + 24);
  const layer = checkpointing
    ? chunkedBytes(layerValues, layerBackwardSpanningValuesPerToken(dims), rows, chunkRows) + (bf16 ? 4 * rows * H : 0) + (offloaded && bf16 ? 2 * rows * H : 0)
    : 0;
  const peakPhase = Math.max(forward, loss, layer);
  const activations = checkpoints + peakPhase;
  const optimizer = 4 * 4 * trainableParameters;
  return {
    weights: weightBytes, optimizer, activations, total: weightBytes + optimizer + activations, host: offloaded ? checkpointBytes : 0,
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

/**
 * `rank1 extract`'s device bytes beyond the weights for one sequence of `tokens` (src/interp/extract.ts,
 * measured on the CPU backend: test/memory-forward-estimate.test.ts). Extraction runs the forward under
 * noGrad: one layer's intermediates, the input beside them and the seven adapters' cached [T, 1] per layer.
 * `graph: true` is the same forward with the adapters' graph, as extraction ran before (their parameters
 * require gradients): every layer keeps its saved intermediates until the forward returns — 4 [T, H], 3 [T, I],
 * 2 [T, heads·hd], 2 [T, kv·hd], [T, hd] per layer — beside the last layer's transients (5 [T, H], 2 [T, I],
 * 2 [T, heads·hd], 3 [T, kv·hd], [T, hd]).
 */
export function estimateExtractionActivations(dims: LayerDims & Pick<Qwen2Dims, 'layers'>, tokens: number, graph = false): number {
  const { hidden: H, intermediate: I, heads, kvHeads, headDim, layers: L } = dims;
  const q = heads * headDim;
  const kv = kvHeads * headDim;
  if (!graph) return 4 * tokens * (layerForwardValuesPerToken(dims) + H + 28 + 7 * L);
  return 4 * tokens * (5 * H + 2 * I + 2 * q + 3 * kv + headDim + L * (4 * H + 3 * I + 2 * q + 2 * kv + headDim + 3));
}

/** What estimateAblationActivations is made of, bytes. */
export interface AblationTerms {
  /** The batch's forward: the full run's residual entering every layer, and one layer's intermediates and input per variant. */
  forward: number;
  /** The KL and cross-entropy: a chunk's full and ablated logits [c, V] beside the final hidden states. */
  loss: number;
}

/**
 * `rank1 ablate`'s device bytes beyond the weights for one sequence of `tokens` and a batch of `batch` ablated
 * variants (src/interp/ablate.ts, measured on the CPU backend: test/memory-forward-estimate.test.ts): the
 * full run's residual stream entering each layer [L, T, H] is kept for the sweep; a batch's forward adds one
 * layer's intermediates and its input per variant; the loss phase reads the logits in [c, V] chunks.
 */
export function estimateAblationActivations(
  dims: LayerDims & Pick<Qwen2Dims, 'layers' | 'vocab'>, tokens: number, batch: number, lossChunk = defaultLossChunkRows(dims.vocab),
): { bytes: number; terms: AblationTerms } {
  const { hidden: H, layers: L, vocab: V } = dims;
  const forward = 4 * tokens * (L * H + batch * (layerForwardValuesPerToken(dims) + H + 8) + H + 24);
  const loss = 4 * tokens * (L * H + batch * H + H) + 2 * 4 * Math.min(lossChunk, batch * tokens) * V;
  return { bytes: Math.max(forward, loss), terms: { forward, loss } };
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
