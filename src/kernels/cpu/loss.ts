import type { Storage } from '../backend.ts';
import { CpuStorage, f32Of, i32Of } from './storage.ts';

function rowLogSumExp(x: Float32Array, base: number, cols: number): number {
  let max = -Infinity;
  for (let c = 0; c < cols; c++) if (x[base + c]! > max) max = x[base + c]!;
  let sum = 0;
  for (let c = 0; c < cols; c++) sum += Math.exp(x[base + c]! - max);
  return max + Math.log(sum);
}

function checkTarget(target: number, vocab: number, row: number): void {
  if (!(target >= 0 && target < vocab)) {
    throw new Error(`crossEntropy: target ${target} at row ${row} is outside the vocabulary [0, ${vocab})`);
  }
}

// crossEntropy: logits [R, V], targets [R], mask [R] -> loss [R] = mask * (lse - logit[target]).
// Rows with mask 0 are never read, so their targets may be anything (e.g. -100 padding).
export function crossEntropy(logits: Storage, targets: Storage, mask: Storage, rows: number, vocab: number): Storage {
  const x = f32Of(logits, 'crossEntropy logits');
  const t = i32Of(targets, 'crossEntropy targets');
  const weight = f32Of(mask, 'crossEntropy mask');
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    if (weight[r] === 0) continue;
    checkTarget(t[r]!, vocab, r);
    out[r] = weight[r]! * (rowLogSumExp(x, r * vocab, vocab) - x[r * vocab + t[r]!]!);
  }
  return new CpuStorage('f32', out);
}

// crossEntropyBackward: dlogits [R, V] = dRow[r] * (softmax(logits) - onehot(target)).
export function crossEntropyBackward(logits: Storage, targets: Storage, dRow: Storage, rows: number, vocab: number): Storage {
  const x = f32Of(logits, 'crossEntropyBackward logits');
  const t = i32Of(targets, 'crossEntropyBackward targets');
  const g = f32Of(dRow, 'crossEntropyBackward dRow');
  const out = new Float32Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    if (g[r] === 0) continue;
    checkTarget(t[r]!, vocab, r);
    const base = r * vocab;
    // softmax = exp(x - max) / sum: one exp per logit (the row's exps are kept, then scaled).
    let max = -Infinity;
    for (let c = 0; c < vocab; c++) max = Math.max(max, x[base + c]!);
    let sum = 0;
    for (let c = 0; c < vocab; c++) {
      const e = Math.exp(x[base + c]! - max);
      out[base + c] = e;
      sum += e;
    }
    const scale = g[r]! / sum;
    for (let c = 0; c < vocab; c++) out[base + c]! *= scale;
    out[base + t[r]!]! -= g[r]!;
  }
  return new CpuStorage('f32', out);
}

/**
 * One row's KL(softmax(p) ‖ softmax(q)) and both log-sum-exps, with two exps per logit: since
 * log P - log Q = (p - q) - lseP + lseQ and sum P = 1, KL = sum_c P_c (p_c - q_c) + lseQ - lseP, and the pass
 * that sums exp(p - max p) also sums exp(p - max p) * (p - q). Accumulated in f64.
 */
function rowKl(a: Float32Array, b: Float32Array, base: number, vocab: number): { kl: number; lseP: number; lseQ: number } {
  let maxP = -Infinity;
  for (let c = 0; c < vocab; c++) if (a[base + c]! > maxP) maxP = a[base + c]!;
  let sumP = 0;
  let weightedDiff = 0;
  for (let c = 0; c < vocab; c++) {
    const pc = a[base + c]!;
    const e = Math.exp(pc - maxP);
    sumP += e;
    weightedDiff += e * (pc - b[base + c]!);
  }
  const lseP = maxP + Math.log(sumP);
  const lseQ = rowLogSumExp(b, base, vocab);
  return { kl: weightedDiff / sumP + lseQ - lseP, lseP, lseQ };
}

// klDiv: p, q logits [R, V] -> [R] = sum softmax(p) * (log_softmax(p) - log_softmax(q)).
export function klDiv(p: Storage, q: Storage, rows: number, vocab: number): Storage {
  const a = f32Of(p, 'klDiv p');
  const b = f32Of(q, 'klDiv q');
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) out[r] = rowKl(a, b, r * vocab, vocab).kl;
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
    const { kl, lseP, lseQ } = rowKl(a, b, base, vocab);
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
