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
  activations: number;
  total: number;
}

export interface TrainingMemoryOptions {
  /** Rows per chunk of the loss (default: defaultLossChunkRows(V)). */
  lossChunk?: number;
  /** The dtype checkpointed layer inputs are kept in (default 'f32'). */
  checkpointDtype?: 'f32' | 'bf16';
}

export function estimateTrainingMemory(
  dims: Qwen2Dims, weightBytes: number, trainableParameters: number, microBatch: number, tokens: number, checkpointing: boolean,
  options: TrainingMemoryOptions = {},
): MemoryEstimate {
  const { hidden: H, intermediate: I, vocab: V, layers: L, heads, kvHeads, headDim } = dims;
  const rows = microBatch * tokens;
  const lossChunk = options.lossChunk ?? defaultLossChunkRows(V);
  // One layer's saved intermediates (norm outputs, q/k/v, attention output, gate/up/act, residuals), f32.
  const perLayer = 4 * rows * (8 * H + 4 * I + (heads + 2 * kvHeads) * headDim * 3);
  const layerInputs = (options.checkpointDtype === 'bf16' ? 2 : 4) * rows * H * L;
  // The loss runs from the final hidden states in chunks (tensor/linear-cross-entropy.ts): one chunk's logits
  // and their gradient [c, V], plus dL/dh [B·T, H] kept for backward. No [B·T, V] term.
  const logits = 4 * Math.min(rows, lossChunk) * V * 2 + 4 * rows * H;
  const activations = (checkpointing ? layerInputs + 2 * perLayer : L * perLayer) + logits;
  const optimizer = 4 * 4 * trainableParameters;
  return { weights: weightBytes, optimizer, activations, total: weightBytes + optimizer + activations };
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
