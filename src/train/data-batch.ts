// Micro-batches: tokenized examples right-padded to the longest, with next-token targets and a loss mask
// already shifted, so the trainer's cross-entropy compares logits[b, t] with targets[b, t] weighted by
// mask[b, t]. Shapes: B examples, T = the longest example's length; every array is [B*T], row-major.
import type { TokenizedExample } from './data-rows.ts';

export interface Batch {
  ids: Int32Array; // [B*T] inputs, padId after each example's end
  targets: Int32Array; // [B*T] targets[b,t] = ids[b,t+1]; padId where there is none
  mask: Float32Array; // [B*T] mask[b,t] = lossMask[b,t+1]; 0 on padding and each example's last position
  batch: number; // B
  seqLen: number; // T
  tokens: number; // scored targets in the batch: the sum of mask
}

export function makeBatch(examples: readonly TokenizedExample[], padId: number): Batch {
  if (examples.length === 0) throw new RangeError('makeBatch: no examples');
  if (!Number.isInteger(padId) || padId < 0) throw new RangeError(`makeBatch: padId must be a non-negative integer, got ${padId}`);
  const B = examples.length;
  let T = 0;
  examples.forEach(({ inputIds, lossMask }, b) => {
    if (inputIds.length !== lossMask.length) throw new RangeError(`makeBatch: example ${b} has ${inputIds.length} ids and ${lossMask.length} mask entries`);
    if (inputIds.length === 0) throw new RangeError(`makeBatch: example ${b} is empty`);
    T = Math.max(T, inputIds.length);
  });
  const ids = new Int32Array(B * T).fill(padId);
  const targets = new Int32Array(B * T).fill(padId);
  const mask = new Float32Array(B * T);
  let tokens = 0;
  examples.forEach(({ inputIds, lossMask }, b) => {
    const row = b * T;
    const length = inputIds.length;
    ids.set(inputIds, row);
    targets.set(inputIds.subarray(1), row);
    for (let t = 0; t < length - 1; t++) {
      if (lossMask[t + 1]) {
        mask[row + t] = 1;
        tokens++;
      }
    }
  });
  return { ids, targets, mask, batch: B, seqLen: T, tokens };
}
