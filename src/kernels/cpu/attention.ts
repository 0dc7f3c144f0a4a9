// Blocked (flash-style) CPU attention: the heavy products go through the WebAssembly SIMD matmul, the row
// passes between them (max, exp, sums, softmax backward) through attention-rows.ts; one query position
// (decoding) runs on attention-rows.ts alone (attentionOneQuery). The scalar version it must agree with, and
// the readable statement of what it computes, is attention-reference.ts.
//
// q [B, T, nh, hd], k/v [B, S, kv, hd]. Query head h reads key/value head g = floor(h / group), group = nh / kv.
// For each batch b and key/value head g, K_g and V_g [S, hd] are gathered once; the queries are taken a block
// of rows at a time, the block holding the same bq positions of all `group` heads that share g (so one
// matmul serves the whole group): Q_blk [group * bq, hd], rows ordered (head, position).
//
//   forward   S = Q_blk K_gᵀ;  P = exp(scale S - max) (masked);  out = (P V_g) / rowsum(P);  lse = max + log rowsum
//   backward  P = exp(scale S - lse);  dP = dO V_gᵀ;  dS = scale P ∘ (dP - rowsum(P ∘ dP) / rowsum(P))
//             dQ_blk = dS K_g;  dK_g += dSᵀ Q_blk;  dV_g += Pᵀ dO
//
// Causal: query position t sees keys s < visibleKeys(t). A block only computes the key columns its last row
// sees, so the fully masked upper triangle is skipped up to a bq-wide diagonal band. Memory is O(bq * S) per
// call: one block's scores, never a T x S matrix.
import type { AttentionParams, MatmulParams, Storage } from '../backend.ts';
import { CpuStorage, f32Of } from './storage.ts';
import { matmulInto } from './matmul.ts';
import { rowKernels, type RowKernels } from './attention-rows.ts';

export { attentionBackwardReference, attentionReference } from './attention-reference.ts';

/** Rows (heads x positions) per block: enough to keep the matmul efficient, few enough to skip the masked triangle. */
const BLOCK_ROWS = 256;
/** Positions per block at most: the causal band computed in vain is about bq / T of the work. */
const MAX_BLOCK_POSITIONS = 64;
/** Score floats per block at most (the backward holds two such blocks), so memory stays bounded for long S. */
const MAX_BLOCK_SCORES = 4 * 2 ** 20;

/** Keys query position t may attend to: s <= t + causalOffset, clamped to [0, S]. */
function visibleKeys(t: number, tk: number, causalOffset: number): number {
  return Math.min(tk, Math.max(0, Math.floor(t + causalOffset) + 1));
}

/** Query positions per block (bq). */
function blockPositions(p: AttentionParams): number {
  const group = p.heads / p.kvHeads;
  const byRows = Math.floor(BLOCK_ROWS / group);
  const byMemory = Math.floor(MAX_BLOCK_SCORES / (group * Math.max(1, p.tk)));
  return Math.max(1, Math.min(p.tq, MAX_BLOCK_POSITIONS, byRows, byMemory));
}

function product(
  batch: number, m: number, n: number, k: number, transA: boolean, transB: boolean,
  aBatchStride = 0, bBatchStride = 0,
): MatmulParams {
  return { batch, m, n, k, transA, transB, aBatchStride, bBatchStride };
}

// Row copies use set(subarray): a memcpy per row, about twice as fast as an element loop for hd = 64.

/** dst[s, :] = src[b, s, head, :] for s < tokens: one head's rows of a [B, tokens, heads, hd] tensor, packed. */
function gatherHead(
  src: Float32Array, b: number, tokens: number, heads: number, head: number, hd: number, dst: Float32Array, at: number,
): void {
  for (let s = 0; s < tokens; s++) {
    const from = ((b * tokens + s) * heads + head) * hd;
    dst.set(src.subarray(from, from + hd), at + s * hd);
  }
}

/** The inverse of gatherHead. */
function scatterHead(
  src: Float32Array, at: number, b: number, tokens: number, heads: number, head: number, hd: number, dst: Float32Array,
): void {
  for (let s = 0; s < tokens; s++) {
    const from = at + s * hd;
    dst.set(src.subarray(from, from + hd), ((b * tokens + s) * heads + head) * hd);
  }
}

/**
 * One query block of the heads firstHead.. firstHead + group - 1 from x [B, T, nh, hd] into dst at `at`,
 * as [group * rows, hd] with row r = (head - firstHead) * rows + (t - t0).
 */
function gatherQueryBlock(
  x: Float32Array, b: number, tq: number, heads: number, firstHead: number, group: number, t0: number, rows: number,
  hd: number, dst: Float32Array, at: number,
): void {
  for (let hi = 0; hi < group; hi++) {
    for (let ti = 0; ti < rows; ti++) {
      const from = ((b * tq + t0 + ti) * heads + firstHead + hi) * hd;
      dst.set(x.subarray(from, from + hd), at + (hi * rows + ti) * hd);
    }
  }
}

/** Flat index of (b, t, h, 0) in a [B, T, nh, hd] tensor for block row r (see gatherQueryBlock). */
function blockRowIndex(r: number, rows: number, b: number, tq: number, heads: number, firstHead: number, t0: number, hd: number): number {
  const hi = Math.floor(r / rows);
  return ((b * tq + t0 + r - hi * rows) * heads + firstHead + hi) * hd;
}

// attention: q [B, T, nh, hd], k/v [B, S, kv, hd] -> out [B, T, nh, hd], lse [B, nh, T].
export function attention(q: Storage, k: Storage, v: Storage, p: AttentionParams, kernels: RowKernels = rowKernels()) {
  const query = f32Of(q, 'attention q');
  const key = f32Of(k, 'attention k');
  const value = f32Of(v, 'attention v');
  const { batch, tq, tk, heads, kvHeads, headDim: hd, scale, causalOffset } = p;
  const group = heads / kvHeads;
  const out = new Float32Array(batch * tq * heads * hd);
  const lse = new Float32Array(batch * heads * tq).fill(-Infinity);
  if (tq === 1) {
    attentionOneQuery(query, key, value, p, out, lse, kernels);
    return { out: new CpuStorage('f32', out) as Storage, lse: new CpuStorage('f32', lse) as Storage };
  }
  const bq = blockPositions(p);
  const keys = new Float32Array(tk * hd); // K_g [S, hd]
  const values = new Float32Array(tk * hd); // V_g [S, hd]
  const queries = new Float32Array(group * bq * hd); // Q_blk [group * bq, hd]
  const scores = kernels.workspace(group * bq * tk); // S, then P, [group * bq, seen]
  const mixed = new Float32Array(group * bq * hd); // P V_g [group * bq, hd]
  const rowSums = new Float64Array(group * bq);

  for (let b = 0; b < batch; b++) {
    for (let g = 0; g < kvHeads; g++) {
      const firstHead = g * group;
      gatherHead(key, b, tk, kvHeads, g, hd, keys, 0);
      gatherHead(value, b, tk, kvHeads, g, hd, values, 0);
      for (let t0 = 0; t0 < tq; t0 += bq) {
        const rows = Math.min(bq, tq - t0);
        const m = group * rows;
        const seen = visibleKeys(t0 + rows - 1, tk, causalOffset); // columns the block's last row sees
        if (seen === 0) continue; // every row masked: out 0, lse -Infinity
        gatherQueryBlock(query, b, tq, heads, firstHead, group, t0, rows, hd, queries, 0);
        matmulInto(queries, 0, keys, 'f32', 0, scores, product(1, m, seen, hd, false, true));
        for (let r = 0; r < m; r++) {
          const t = t0 + r % rows;
          const visible = visibleKeys(t, tk, causalOffset);
          const start = r * seen;
          if (visible === 0) {
            scores.fill(0, start, start + seen);
            rowSums[r] = 0;
            continue;
          }
          const max = kernels.scaledMax(scores, start, visible, scale);
          const sum = kernels.expShifted(scores, start, visible, scale, max);
          scores.fill(0, start + visible, start + seen);
          rowSums[r] = sum;
          const h = firstHead + Math.floor(r / rows);
          lse[(b * heads + h) * tq + t] = max + Math.log(sum);
        }
        matmulInto(scores, 0, values, 'f32', 0, mixed, product(1, m, hd, seen, false, false));
        for (let r = 0; r < m; r++) {
          if (rowSums[r] === 0) continue;
          const inverse = 1 / rowSums[r]!;
          const to = blockRowIndex(r, rows, b, tq, heads, firstHead, t0, hd);
          for (let d = 0; d < hd; d++) out[to + d] = mixed[r * hd + d]! * inverse;
        }
      }
    }
  }
  return { out: new CpuStorage('f32', out) as Storage, lse: new CpuStorage('f32', lse) as Storage };
}

/**
 * One query position (KV-cache decoding), with the row kernels' own products instead of the matmul: each
 * batch entry's keys and values [S, kv·hd] are copied into the workspace once, and every query head h takes
 * its key/value head g's columns in place (rows kv·hd floats apart):
 *   s = K_g q_h [S];  P = exp(scale s - max);  out_h = (Pᵀ V_g) / sum(P);  lse_h = max + log sum(P).
 * Only the products needed are done (through the matmul, a zero-padded Q [nh, kv·hd] did kv times as many)
 * and nothing is allocated per call: at a 0.5B model's shapes the matmul's fixed costs were most of the time.
 */
function attentionOneQuery(
  query: Float32Array, key: Float32Array, value: Float32Array, p: AttentionParams, out: Float32Array, lse: Float32Array,
  kernels: RowKernels,
): void {
  const { batch, tk, heads, kvHeads, headDim: hd, scale, causalOffset } = p;
  const group = heads / kvHeads;
  const width = kvHeads * hd;
  const seen = visibleKeys(0, tk, causalOffset);
  if (seen === 0) return; // every key masked: out 0, lse -Infinity
  // Workspace: K [seen, kv·hd], V [seen, kv·hd], q [nh, hd], one head's scores [seen] and its mix [hd].
  const keysAt = 0;
  const valuesAt = seen * width;
  const queryAt = 2 * seen * width;
  const scoresAt = queryAt + heads * hd;
  const mixedAt = scoresAt + seen;
  const work = kernels.workspace(mixedAt + hd);
  for (let b = 0; b < batch; b++) {
    const cache = b * tk * width;
    work.set(key.subarray(cache, cache + seen * width), keysAt);
    work.set(value.subarray(cache, cache + seen * width), valuesAt);
    work.set(query.subarray(b * heads * hd, (b + 1) * heads * hd), queryAt);
    for (let h = 0; h < heads; h++) {
      const g = Math.floor(h / group);
      kernels.rowDots(work, queryAt + h * hd, keysAt + g * hd, width, hd, seen, scoresAt);
      const max = kernels.scaledMax(work, scoresAt, seen, scale);
      const sum = kernels.expShifted(work, scoresAt, seen, scale, max);
      lse[b * heads + h] = max + Math.log(sum);
      kernels.weightedRows(work, scoresAt, valuesAt + g * hd, width, hd, seen, mixedAt);
      const inverse = 1 / sum;
      const to = (b * heads + h) * hd;
      for (let d = 0; d < hd; d++) out[to + d] = work[mixedAt + d]! * inverse;
    }
  }
}

// attentionBackward: P is recomputed from lse a block at a time; dK_g, dV_g accumulate over the query blocks
// of every head in the group. Two of the three products per block run as one batch-2 matmul each:
//   [S; dP] = [Q_blk; dO_blk] [K_g; V_g]ᵀ  and  [dK part; dV part] = [dS; P]ᵀ [Q_blk; dO_blk].
// The softmax backward subtracts rowsum(P ∘ dP) / rowsum(P) rather than the reference's rowsum(dO ∘ out):
// equal in exact arithmetic (rowsum(P) = 1, out = P V), but here dP and the term subtracted from it come from
// the same f32 dP, so a row's dS sums to zero up to f64 rounding and a query that sees a single key passes
// (to rounding) no gradient to q and k, as in torch. Dividing by rowsum(P) keeps that true when the recomputed
// scores differ in the last bits from those lse was taken from. `out` is therefore not read.
export function attentionBackward(
  q: Storage, k: Storage, v: Storage, out: Storage, lse: Storage, dout: Storage, p: AttentionParams,
  kernels: RowKernels = rowKernels(),
) {
  const query = f32Of(q, 'attentionBackward q');
  const key = f32Of(k, 'attentionBackward k');
  const value = f32Of(v, 'attentionBackward v');
  f32Of(out, 'attentionBackward out'); // checked, not read (see above)
  const logSumExp = f32Of(lse, 'attentionBackward lse');
  const grad = f32Of(dout, 'attentionBackward dout');
  const { batch, tq, tk, heads, kvHeads, headDim: hd, scale, causalOffset } = p;
  const group = heads / kvHeads;
  const dq = new Float32Array(query.length);
  const dk = new Float32Array(key.length);
  const dv = new Float32Array(value.length);
  const bq = blockPositions(p);
  const maxRows = group * bq;
  const keyValues = new Float32Array(2 * tk * hd); // [K_g; V_g], each [S, hd]
  const rowsIn = new Float32Array(2 * maxRows * hd); // [Q_blk; dO_blk], each [m, hd]
  // One workspace on the row kernels' memory, cut at these offsets: scores [S; dP], then [dS; P], each
  // [m, seen]; the block's [dK part; dV part], each [seen, hd]; their sums over the blocks [dK_g; dV_g], each [S, hd].
  const partsAt = 2 * maxRows * tk;
  const sumsAt = partsAt + 2 * tk * hd;
  const workspace = kernels.workspace(sumsAt + 2 * tk * hd);
  const scores = workspace.subarray(0, partsAt);
  const keyGrads = workspace.subarray(partsAt, sumsAt);
  const keyGradSums = workspace.subarray(sumsAt);
  const queryGrads = new Float32Array(maxRows * hd); // dQ_blk [m, hd]

  for (let b = 0; b < batch; b++) {
    for (let g = 0; g < kvHeads; g++) {
      const firstHead = g * group;
      gatherHead(key, b, tk, kvHeads, g, hd, keyValues, 0);
      gatherHead(value, b, tk, kvHeads, g, hd, keyValues, tk * hd);
      keyGradSums.fill(0);
      for (let t0 = 0; t0 < tq; t0 += bq) {
        const rows = Math.min(bq, tq - t0);
        const m = group * rows;
        const seen = visibleKeys(t0 + rows - 1, tk, causalOffset);
        if (seen === 0) continue; // every row masked: no gradient flows
        gatherQueryBlock(query, b, tq, heads, firstHead, group, t0, rows, hd, rowsIn, 0);
        gatherQueryBlock(grad, b, tq, heads, firstHead, group, t0, rows, hd, rowsIn, m * hd);
        const plane = m * seen;
        matmulInto(rowsIn, 0, keyValues, 'f32', 0, scores, product(2, m, seen, hd, false, true, m * hd, tk * hd));
        for (let r = 0; r < m; r++) {
          const t = t0 + r % rows;
          const h = firstHead + Math.floor(r / rows);
          const visible = visibleKeys(t, tk, causalOffset);
          const start = r * seen;
          const total = kernels.expShifted(scores, start, visible, scale, logSumExp[(b * heads + h) * tq + t]!);
          const delta = total > 0 ? kernels.dot(scores, start, plane + start, visible) / total : 0;
          // dS and P are written crosswise, so that [dS; P] pairs with [Q_blk; dO_blk] in the next product.
          kernels.softmaxGrad(scores, start, plane + start, visible, delta, scale);
          scores.fill(0, start + visible, start + seen);
          scores.fill(0, plane + start + visible, plane + start + seen);
        }
        matmulInto(scores, 0, rowsIn, 'f32', 0, keyGrads, product(2, seen, hd, m, true, false, plane, m * hd));
        kernels.addInto(workspace, sumsAt, partsAt, seen * hd);
        kernels.addInto(workspace, sumsAt + tk * hd, partsAt + seen * hd, seen * hd);
        matmulInto(scores, 0, keyValues, 'f32', 0, queryGrads, product(1, m, hd, seen, false, false));
        for (let r = 0; r < m; r++) {
          dq.set(queryGrads.subarray(r * hd, (r + 1) * hd), blockRowIndex(r, rows, b, tq, heads, firstHead, t0, hd));
        }
      }
      scatterHead(keyGradSums, 0, b, tk, kvHeads, g, hd, dk);
      scatterHead(keyGradSums, tk * hd, b, tk, kvHeads, g, hd, dv);
    }
  }
  return {
    dq: new CpuStorage('f32', dq) as Storage,
    dk: new CpuStorage('f32', dk) as Storage,
    dv: new CpuStorage('f32', dv) as Storage,
  };
}
