// A product whose left operand is mostly masked out: BatchTopK's decoder multiplies latents [B, F] of which only
// k·B entries are selected (0.45% at the paper's sizes) by W_dec [F, d], and its auxiliary loss multiplies the
// top d/2 dead latents of each row (only dead columns). A dense matmul spends almost all of its multiply-adds on
// zeros, three times per step (forward, dA, dW). Two ways to skip them, chosen per call:
//  - gather: visit each selected entry (plain JS, ~7 ns per multiply-add here, cache misses on W's rows);
//  - compressed dense: keep only the columns with any selected entry, then the WASM SIMD matmul (~0.08 ns per
//    multiply-add) on [R, C'] × [C', N]. The aux loss's mask (d/2 per row, all among the dead columns) is dense
//    within its columns, so it runs this way at a fraction of the full product.
//   maskedMatmul:          a [R, K], mask [R, K] (0/1), w [K, N] -> y [R, N] = (a ⊙ mask) w
//   maskedMatmulBackward:  dy [R, N] -> da [R, K] = (dy wᵀ) ⊙ mask (zeros off the mask),
//                                        dw [K, N] = (a ⊙ mask)ᵀ dy (zero rows for unused columns)
import type { MatmulParams, Storage } from '../backend.ts';
import { matmulInto } from './matmul.ts';
import { CpuStorage, cpuStorage, f32Of } from './storage.ts';
import { allocateF32 } from './array-pool.ts';

/** Fraction of selected entries within the used columns above which the compressed dense product is faster. */
export const DENSE_ABOVE = 0.02;

const plain = (m: number, n: number, k: number, transA: boolean, transB: boolean): MatmulParams => ({
  batch: 1, m, n, k, transA, transB, aBatchStride: 0, bBatchStride: 0,
});

interface Selection {
  /** Entries of row r: columns[starts[r] .. starts[r + 1]). */
  starts: Int32Array;
  columns: Int32Array;
  /** Columns with at least one selected entry, ascending. */
  used: Int32Array;
}

/**
 * The mask's ones, by row, and the columns they use, in one pass (a value other than 0 or 1 is an error). The
 * mask is mostly zeros (BatchTopK keeps 0.45%): eight entries at a time are skipped when all are ±0.
 */
function selection(mask: Float32Array, rows: number, inner: number, what: string): Selection {
  const bits = new Int32Array(mask.buffer, mask.byteOffset, mask.length);
  const starts = new Int32Array(rows + 1);
  const usedFlags = new Uint8Array(inner);
  let columns = new Int32Array(Math.max(64, rows));
  let count = 0;
  const visit = (at: number, k: number): void => {
    const m = mask[at]!;
    if (m === 0) return;
    // Only 0 and 1 are meaningful; anything else means the caller passed values, not a mask.
    if (m !== 1) throw new Error(`${what}: mask must hold only 0 and 1, found ${m} at element ${at}`);
    if (count === columns.length) {
      const grown = new Int32Array(2 * count);
      grown.set(columns);
      columns = grown;
    }
    columns[count++] = k;
    usedFlags[k] = 1;
  };
  const eighths = inner & ~7;
  for (let r = 0; r < rows; r++) {
    starts[r] = count;
    const base = r * inner;
    for (let k = 0; k < eighths; k += 8) {
      const at = base + k;
      // ±0 has no bits but the sign: eight of them OR to 0 or to the sign bit alone.
      if (((bits[at]! | bits[at + 1]! | bits[at + 2]! | bits[at + 3]! | bits[at + 4]! | bits[at + 5]! | bits[at + 6]! | bits[at + 7]!) & 0x7fffffff) === 0) continue;
      for (let j = 0; j < 8; j++) visit(at + j, k + j);
    }
    for (let k = eighths; k < inner; k++) visit(base + k, k);
  }
  starts[rows] = count;
  let usedCount = 0;
  for (let k = 0; k < inner; k++) usedCount += usedFlags[k]!;
  const used = new Int32Array(usedCount);
  for (let k = 0, at = 0; k < inner; k++) if (usedFlags[k]) used[at++] = k;
  return { starts, columns: columns.subarray(0, count), used };
}

/**
 * Selections by mask storage: a backward reads the mask its forward read, and reuses that selection instead
 * of scanning the mask again. Safe because storage objects are never reused (the array pool recycles arrays,
 * never storages, and a freed storage cannot be read), and a selection is used only at the storage version it
 * was read at: a kernel that writes a storage in place bumps its version (storage.ts, writeInPlace).
 */
const selections = new WeakMap<Storage, { version: number; rows: number; inner: number; selection: Selection }>();

function selectionOf(mask: Storage, rows: number, inner: number, what: string): Selection {
  const values = f32Of(mask, `${what} mask`);
  const { version } = cpuStorage(mask, `${what} mask`);
  const known = selections.get(mask);
  if (known && known.version === version && known.rows === rows && known.inner === inner) return known.selection;
  const fresh = selection(values, rows, inner, what);
  selections.set(mask, { version, rows, inner, selection: fresh });
  return fresh;
}

/** Which product a selection of `selected` entries over `usedColumns` columns of `rows` rows runs as. */
export function maskedMatmulPath(selected: number, rows: number, usedColumns: number): 'gather' | 'compressed' {
  return selected > DENSE_ABOVE * rows * usedColumns ? 'compressed' : 'gather';
}

const compressed = (s: Selection, rows: number) => maskedMatmulPath(s.columns.length, rows, s.used.length) === 'compressed';

/** (a ⊙ mask)[:, used] as [R, C']. */
function gatherMaskedColumns(a: Float32Array, mask: Float32Array, rows: number, inner: number, used: Int32Array): Float32Array {
  const width = used.length;
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) {
    const from = r * inner;
    const to = r * width;
    for (let j = 0; j < width; j++) out[to + j] = a[from + used[j]!]! * mask[from + used[j]!]!;
  }
  return out;
}

/** w[used, :] as [C', N]. */
function gatherRows(w: Float32Array, cols: number, used: Int32Array): Float32Array {
  const out = new Float32Array(used.length * cols);
  for (let j = 0; j < used.length; j++) out.set(w.subarray(used[j]! * cols, (used[j]! + 1) * cols), j * cols);
  return out;
}

// a [R, K], mask [R, K], w [K, N] -> y [R, N]
export function maskedMatmul(a: Storage, mask: Storage, w: Storage, rows: number, inner: number, cols: number): Storage {
  const av = f32Of(a, 'maskedMatmul a');
  const mv = f32Of(mask, 'maskedMatmul mask');
  const wv = f32Of(w, 'maskedMatmul w');
  const s = selectionOf(mask, rows, inner, 'maskedMatmul');
  const out = allocateF32(rows * cols);
  if (s.used.length === 0) return new CpuStorage('f32', out);
  if (compressed(s, rows)) {
    const width = s.used.length;
    matmulInto(gatherMaskedColumns(av, mv, rows, inner, s.used), 0, gatherRows(wv, cols, s.used), 'f32', 0, out, plain(rows, cols, width, false, false));
    return new CpuStorage('f32', out);
  }
  gatherProduct(av, wv, s, rows, inner, cols, out);
  return new CpuStorage('f32', out);
}

/**
 * The gather path's forward: out[r, :] += a[r, k] · w[k, :] for each selected non-zero entry, in column order.
 * Four entries per pass over the output row, each add still rounded to f32 as `+=` on the row would (the
 * f32 × f32 product is exact in f64, so fround(o + v·w) is that add): a quarter of the row's loads and stores.
 */
function gatherProduct(av: Float32Array, wv: Float32Array, s: Selection, rows: number, inner: number, cols: number, out: Float32Array): void {
  const { starts, columns } = s;
  const picked = new Int32Array(inner);
  for (let r = 0; r < rows; r++) {
    const outBase = r * cols;
    let m = 0;
    for (let e = starts[r]!; e < starts[r + 1]!; e++) if (av[r * inner + columns[e]!] !== 0) picked[m++] = columns[e]!;
    let j = 0;
    for (; j + 4 <= m; j += 4) {
      const [k0, k1, k2, k3] = [picked[j]!, picked[j + 1]!, picked[j + 2]!, picked[j + 3]!];
      const [v0, v1, v2, v3] = [av[r * inner + k0]!, av[r * inner + k1]!, av[r * inner + k2]!, av[r * inner + k3]!];
      const [w0, w1, w2, w3] = [k0 * cols, k1 * cols, k2 * cols, k3 * cols];
      for (let n = 0; n < cols; n++) {
        let o = out[outBase + n]!;
        o = Math.fround(o + v0 * wv[w0 + n]!);
        o = Math.fround(o + v1 * wv[w1 + n]!);
        o = Math.fround(o + v2 * wv[w2 + n]!);
        out[outBase + n] = o + v3 * wv[w3 + n]!;
      }
    }
    for (; j < m; j++) {
      const value = av[r * inner + picked[j]!]!;
      const wBase = picked[j]! * cols;
      for (let n = 0; n < cols; n++) out[outBase + n]! += value * wv[wBase + n]!;
    }
  }
}

// dy [R, N] -> da [R, K], dw [K, N]
export function maskedMatmulBackward(
  a: Storage, mask: Storage, w: Storage, dy: Storage, rows: number, inner: number, cols: number,
): { da: Storage; dw: Storage } {
  const av = f32Of(a, 'maskedMatmulBackward a');
  const mv = f32Of(mask, 'maskedMatmulBackward mask');
  const wv = f32Of(w, 'maskedMatmulBackward w');
  const g = f32Of(dy, 'maskedMatmulBackward dy');
  const s = selectionOf(mask, rows, inner, 'maskedMatmulBackward');
  const da = allocateF32(rows * inner);
  const dw = allocateF32(inner * cols);
  if (s.used.length > 0 && compressed(s, rows)) {
    const { used } = s;
    const width = used.length;
    const daUsed = new Float32Array(rows * width);
    matmulInto(g, 0, gatherRows(wv, cols, used), 'f32', 0, daUsed, plain(rows, width, cols, false, true)); // dy w[used]ᵀ
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < width; j++) {
        const at = r * inner + used[j]!;
        da[at] = daUsed[r * width + j]! * mv[at]!;
      }
    }
    const dwUsed = new Float32Array(width * cols);
    matmulInto(gatherMaskedColumns(av, mv, rows, inner, used), 0, g, 'f32', 0, dwUsed, plain(width, cols, rows, true, false));
    for (let j = 0; j < width; j++) dw.set(dwUsed.subarray(j * cols, (j + 1) * cols), used[j]! * cols);
    return { da: new CpuStorage('f32', da), dw: new CpuStorage('f32', dw) };
  }
  gatherProductBackward(av, wv, g, s, rows, inner, cols, da, dw);
  return { da: new CpuStorage('f32', da), dw: new CpuStorage('f32', dw) };
}

/**
 * The gather path's backward: for each selected entry (r, k), da[r, k] = dy[r, :] · w[k, :] and
 * dw[k, :] += a[r, k] · dy[r, :]. Four entries of a row at a time: their four dot products are independent
 * running sums (one alone waits on its previous add every element), each still summed in order.
 */
function gatherProductBackward(
  av: Float32Array, wv: Float32Array, g: Float32Array, s: Selection, rows: number, inner: number, cols: number, da: Float32Array, dw: Float32Array,
): void {
  const { starts, columns } = s;
  for (let r = 0; r < rows; r++) {
    const gBase = r * cols;
    const aBase = r * inner;
    let e = starts[r]!;
    const end = starts[r + 1]!;
    for (; e + 4 <= end; e += 4) {
      const [k0, k1, k2, k3] = [columns[e]!, columns[e + 1]!, columns[e + 2]!, columns[e + 3]!];
      const [v0, v1, v2, v3] = [av[aBase + k0]!, av[aBase + k1]!, av[aBase + k2]!, av[aBase + k3]!];
      const [w0, w1, w2, w3] = [k0 * cols, k1 * cols, k2 * cols, k3 * cols];
      let d0 = 0;
      let d1 = 0;
      let d2 = 0;
      let d3 = 0;
      for (let n = 0; n < cols; n++) {
        const gn = g[gBase + n]!;
        d0 += gn * wv[w0 + n]!;
        d1 += gn * wv[w1 + n]!;
        d2 += gn * wv[w2 + n]!;
        d3 += gn * wv[w3 + n]!;
        dw[w0 + n]! += v0 * gn;
        dw[w1 + n]! += v1 * gn;
        dw[w2 + n]! += v2 * gn;
        dw[w3 + n]! += v3 * gn;
      }
      da[aBase + k0] = d0;
      da[aBase + k1] = d1;
      da[aBase + k2] = d2;
      da[aBase + k3] = d3;
    }
    for (; e < end; e++) {
      const k = columns[e]!;
      const wBase = k * cols;
      const value = av[aBase + k]!;
      let dot = 0;
      for (let n = 0; n < cols; n++) {
        const gn = g[gBase + n]!;
        dot += gn * wv[wBase + n]!;
        dw[wBase + n]! += value * gn;
      }
      da[aBase + k] = dot;
    }
  }
}
