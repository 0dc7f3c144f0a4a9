// The CPU backend's losses over logits rows: cross-entropy (forward, backward, and both in one pass over each
// row for the chunked loss), and the KL divergence the ablation sweep measures. The forwards run on
// softmax-wasm.ts's row kernels (a vectorised exp); the KL's backward stays scalar.
// Legend: R rows, V vocab.
import type { Storage } from '../backend.ts';
import { CpuStorage, f32Of, i32Of } from './storage.ts';
import { rowKernels, type RowKernels } from './softmax-wasm.ts';

function checkTarget(op: string, target: number, vocab: number, row: number): void {
  if (!(target >= 0 && target < vocab)) {
    throw new Error(`${op}: target ${target} at row ${row} is outside the vocabulary [0, ${vocab})`);
  }
}

interface CrossEntropyRows {
  x: Float32Array;
  t: Int32Array;
  /** Each row's weight: the mask in the forward, the upstream gradient in the backward. */
  weight: Float32Array;
}

function crossEntropyInputs(op: string, logits: Storage, targets: Storage, weights: Storage): CrossEntropyRows {
  return { x: f32Of(logits, `${op} logits`), t: i32Of(targets, `${op} targets`), weight: f32Of(weights, `${op} ${op === 'crossEntropyBackward' ? 'dRow' : 'mask'}`) };
}

/**
 * One row's loss, weight · (lse − x[target]), with the row loaded in `kernels`; with `grad`, also
 * grad[r] = weight · (softmax − onehot(target)) from the same max and sum: three passes over the row (max,
 * exp and its sum, scale) and one exp per logit.
 */
function crossEntropyRow(
  kernels: RowKernels, rows: CrossEntropyRows, r: number, vocab: number, grad: Float32Array | null,
): number {
  const base = r * vocab;
  const target = rows.t[r]!;
  const weight = rows.weight[r]!;
  const max = kernels.max();
  const sum = grad ? kernels.expInPlace(max) : kernels.sumExp(max);
  if (grad) {
    kernels.scaleInto(weight / sum, grad, base);
    grad[base + target]! -= weight;
  }
  return weight * (max + Math.log(sum) - rows.x[base + target]!);
}

/**
 * The row loop shared by the three cross-entropy kernels: rows whose weight is 0 are never read (their
 * targets may be anything, e.g. -100 padding), count 0 and get a zero gradient row.
 */
function crossEntropyRows(
  op: string, rows: CrossEntropyRows, count: number, vocab: number, grad: Float32Array | null,
): Float32Array {
  const kernels = rowKernels();
  const losses = new Float32Array(count);
  for (let r = 0; r < count; r++) {
    if (rows.weight[r] === 0) continue;
    checkTarget(op, rows.t[r]!, vocab, r);
    kernels.load(rows.x, r * vocab, vocab);
    losses[r] = crossEntropyRow(kernels, rows, r, vocab, grad);
  }
  return losses;
}

// crossEntropy: logits [R, V], targets [R], mask [R] -> loss [R] = mask * (lse - logit[target]).
export function crossEntropy(logits: Storage, targets: Storage, mask: Storage, rows: number, vocab: number): Storage {
  const inputs = crossEntropyInputs('crossEntropy', logits, targets, mask);
  return new CpuStorage('f32', crossEntropyRows('crossEntropy', inputs, rows, vocab, null));
}

// crossEntropyBackward: dlogits [R, V] = dRow[r] * (softmax(logits) - onehot(target)).
export function crossEntropyBackward(logits: Storage, targets: Storage, dRow: Storage, rows: number, vocab: number): Storage {
  const inputs = crossEntropyInputs('crossEntropyBackward', logits, targets, dRow);
  const grad = new Float32Array(rows * vocab);
  crossEntropyRows('crossEntropyBackward', inputs, rows, vocab, grad);
  return new CpuStorage('f32', grad);
}

// crossEntropyWithGrad: logits [R, V], targets [R], mask [R] -> loss [R] as crossEntropy and
// dlogits [R, V] = mask * (softmax(logits) - onehot(target)), i.e. crossEntropyBackward with dRow = mask,
// from one max and one sum per row.
export function crossEntropyWithGrad(
  logits: Storage, targets: Storage, mask: Storage, rows: number, vocab: number,
): { loss: Storage; dlogits: Storage } {
  const inputs = crossEntropyInputs('crossEntropyWithGrad', logits, targets, mask);
  const grad = new Float32Array(rows * vocab);
  const loss = crossEntropyRows('crossEntropyWithGrad', inputs, rows, vocab, grad);
  return { loss: new CpuStorage('f32', loss), dlogits: new CpuStorage('f32', grad) };
}

/**
 * One row's KL(softmax(p) ‖ softmax(q)) and both log-sum-exps, on the row kernels with one exp per logit of
 * each: since log P - log Q = (p - q) - lseP + lseQ and sum P = 1, KL = sum_c P_c (p_c - q_c) + lseQ - lseP,
 * and the pass that sums exp(p - max p) also sums exp(p - max p) * (p - q). Accumulated in f64.
 */
function rowKl(kernels: RowKernels, a: Float32Array, b: Float32Array, base: number, vocab: number): { kl: number; lseP: number; lseQ: number } {
  kernels.load(a, base, vocab);
  kernels.loadSecond(b, base);
  const maxP = kernels.max();
  const { sum: sumP, dot: weightedDiff } = kernels.klTerms(maxP);
  kernels.load(b, base, vocab);
  const maxQ = kernels.max();
  const lseP = maxP + Math.log(sumP);
  const lseQ = maxQ + Math.log(kernels.sumExp(maxQ));
  return { kl: weightedDiff / sumP + lseQ - lseP, lseP, lseQ };
}

// klDiv: p, q logits [R, V] -> [R] = sum softmax(p) * (log_softmax(p) - log_softmax(q)).
export function klDiv(p: Storage, q: Storage, rows: number, vocab: number): Storage {
  const a = f32Of(p, 'klDiv p');
  const b = f32Of(q, 'klDiv q');
  const out = new Float32Array(rows);
  const kernels = rowKernels();
  for (let r = 0; r < rows; r++) out[r] = rowKl(kernels, a, b, r * vocab, vocab).kl;
  return new CpuStorage('f32', out);
}

// klDivBackward: with P = softmax(p), Q = softmax(q), L = log P - log Q, KL = sum P L:
//   dp = dRow * P * (L - KL);   dq = dRow * (Q - P).
export function klDivBackward(p: Storage, q: Storage, dRow: Storage, rows: number, vocab: number) {
  const a = f32Of(p, 'klDivBackward p');
  const b = f32Of(q, 'klDivBackward q');
  const g = f32Of(dRow, 'klDivBackward dRow');
  const dp = new Float32Array(rows * vocab);
  const dq = new Float32Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    const base = r * vocab;
    const { kl, lseP, lseQ } = rowKl(rowKernels(), a, b, base, vocab);
    for (let c = 0; c < vocab; c++) {
      const logP = a[base + c]! - lseP;
      const logQ = b[base + c]! - lseQ;
      const probP = Math.exp(logP);
      dp[base + c] = g[r]! * probP * (logP - logQ - kl);
      dq[base + c] = g[r]! * (Math.exp(logQ) - probP);
    }
  }
  return { dp: new CpuStorage('f32', dp) as Storage, dq: new CpuStorage('f32', dq) as Storage };
}
