// matmul: a [batch, m, k] (or [k, m] per batch when transA) f32, b [batch, k, n] (or [n, k] when transB)
// f32/f16/bf16 -> out [batch, m, n] f32. Batch strides may be 0 (one matrix broadcast over the batch).
//
// Three kernels, picked per adapter (defaultMatmulKernel):
//  - tiled (GPUs): each workgroup computes a BM x BN tile of out, stepping through k in BK slices staged in
//    workgroup memory as vec4 runs along k (halves widened once on the way in, vec4 global loads where
//    aligned); each thread keeps an RM x RN register block and does RM * RN vec4 dot products per
//    RM + RN workgroup-memory loads. Edges are zero-filled on load and masked on store.
//  - gemv (GPUs, m = 1, the decode step): GEMV_ROWS outputs per workgroup, threads striding over k with a
//    tree reduction; b rows ([n, k], the Linear layout) are read once, contiguously.
//  - stream (CPU adapters: llvmpipe/lavapipe): see streamSource. A [n, k] b is transposed to [k, n] first
//    when m >= STREAM_TRANSPOSE_MIN_M.
//
// Binding-limit split: the work is cut into pieces (batch range, m range, n range, k range) until a, b
// and out windows each fit one binding; a piece over a later k range accumulates into out. b above the
// limit (a tied embedding used as the LM head) is cut along n for transB, along k otherwise.

import type { DType, MatmulParams, Storage } from '../backend.ts';
import { copyView } from './copy.ts';
import { full } from './memory.ts';
import { asWebGpuStorage, type Kernel, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { ENTRY_ARGS, PRELUDE, loadFn, params, storageDecl } from './wgsl.ts';

export interface TileConfig {
  /** Threads along n and along m. */
  threadsN: number;
  threadsM: number;
  /** Outputs per thread along m and along n (rowsPerThread * colsPerThread accumulators). */
  rowsPerThread: number;
  colsPerThread: number;
  /** k slice staged per step (a multiple of 4). */
  tileK: number;
}

/** 64 x 64 output tiles, 256 threads of 4 x 4: the usual shape for discrete and integrated GPUs. */
export const DEFAULT_TILE: TileConfig = { threadsN: 16, threadsM: 16, rowsPerThread: 4, colsPerThread: 4, tileK: 16 };

/** From this many rows of a, the streaming kernel transposes a [n, k] b to [k, n] first. */
const STREAM_TRANSPOSE_MIN_M = 16;

const GEMV_THREADS_PER_ROW = 64;
const GEMV_ROWS = 4;

const matmulParams = params({
  batch: 'u32', m: 'u32', n: 'u32', k: 'u32',
  lda: 'u32', ldb: 'u32', ldc: 'u32',
  aOffset: 'u32', bOffset: 'u32', outOffset: 'u32',
  aBatchStride: 'u32', bBatchStride: 'u32', outBatchStride: 'u32',
  accumulate: 'u32',
});

/** WGSL expressions for element (row, col) of a and (kk, col) of b, given each one's transposition. */
function operandAddresses(transA: boolean, transB: boolean) {
  return {
    a: (i: string, kk: string) => (transA ? `aBase + (${kk}) * params.lda + (${i})` : `aBase + (${i}) * params.lda + (${kk})`),
    b: (kk: string, j: string) => (transB ? `bBase + (${j}) * params.ldb + (${kk})` : `bBase + (${kk}) * params.ldb + (${j})`),
  };
}

/**
 * Whether a's (b's) k-runs start on 4-element boundaries everywhere (offset, leading dimension and batch
 * stride all multiples of 4, k contiguous): then 4 consecutive k load as one vec4 (two u32 words for halves).
 */
export interface TileAlignment {
  aVec4: boolean;
  bVec4: boolean;
}

function tiledSource(transA: boolean, transB: boolean, bDtype: DType, tile: TileConfig, aligned: TileAlignment): string {
  const { threadsN, threadsM, rowsPerThread: RM, colsPerThread: RN, tileK: BK } = tile;
  const BM = threadsM * RM;
  const BN = threadsN * RN;
  const KQ = BK / 4; // vec4s of k per tile row
  const STRIDE = KQ + 1; // one vec4 of padding keeps rows on different banks
  const threads = threadsN * threadsM;
  const address = operandAddresses(transA, transB);
  const bHalf = bDtype === 'f16' || bDtype === 'bf16';
  const widen = bDtype === 'bf16' ? 'bf16_to_f32' : 'f16_to_f32';

  // a(i, k..k+3) and b(k..k+3, j) as vec4s, zero outside [m, k] / [k, n].
  const loadA4 = aligned.aVec4
    ? `if (i < params.m && k < params.k) { return a[(${address.a('i', 'k')}) >> 2u]; }
  return vec4<f32>(0.0);`
    : `var v = vec4<f32>(0.0);
  if (i < params.m) {
    for (var q = 0u; q < 4u; q = q + 1u) { if (k + q < params.k) { v[q] = a[${address.a('i', 'k + q')}]; } }
  }
  return v;`;
  let loadB4: string;
  if (aligned.bVec4 && !bHalf) {
    loadB4 = `if (j < params.n && k < params.k) { return b[(${address.b('k', 'j')}) >> 2u]; }
  return vec4<f32>(0.0);`;
  } else if (aligned.bVec4) {
    loadB4 = `if (j < params.n && k < params.k) {
    let word = (${address.b('k', 'j')}) >> 1u;
    let low = b[word];
    let high = b[word + 1u];
    return vec4<f32>(${widen}(low & 0xffffu), ${widen}(low >> 16u), ${widen}(high & 0xffffu), ${widen}(high >> 16u));
  }
  return vec4<f32>(0.0);`;
  } else {
    loadB4 = `var v = vec4<f32>(0.0);
  if (j < params.n) {
    for (var q = 0u; q < 4u; q = q + 1u) { if (k + q < params.k) { v[q] = load_b(${address.b('k + q', 'j')}); } }
  }
  return v;`;
  }
  const aDecl = aligned.aVec4
    ? '@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;\n'
    : storageDecl(1, 'a', 'f32', 'read');
  const bDecl = aligned.bVec4 && !bHalf
    ? '@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;\n'
    : storageDecl(2, 'b', bDtype, 'read') + loadFn('b', bDtype);

  // Staging order follows each operand's contiguous axis so neighbouring threads read neighbouring memory.
  const stageA = transA ? `let q = e / ${BM}u; let r = e % ${BM}u;` : `let r = e / ${KQ}u; let q = e % ${KQ}u;`;
  const stageB = transB ? `let c = e / ${KQ}u; let q = e % ${KQ}u;` : `let q = e / ${BN}u; let c = e % ${BN}u;`;

  // Thread (tx, ty) owns rows ty + r * threadsM and columns tx + c * threadsN: neighbouring threads write
  // neighbouring columns. Everything below is unrolled so accumulators are indexed by constants only.
  let compute = '';
  for (let r = 0; r < RM; r++) compute += `      let a${r} = tile_a[(ty + ${r * threadsM}u) * ${STRIDE}u + kq];\n`;
  for (let c = 0; c < RN; c++) compute += `      let b${c} = tile_b[(tx + ${c * threadsN}u) * ${STRIDE}u + kq];\n`;
  for (let r = 0; r < RM; r++) {
    for (let c = 0; c < RN; c++) compute += `      acc[${r * RN + c}] = acc[${r * RN + c}] + dot(a${r}, b${c});\n`;
  }
  let store = '';
  for (let r = 0; r < RM; r++) {
    store += `  let i${r} = tileRow + ty + ${r * threadsM}u;\n  if (i${r} < params.m) {\n`;
    for (let c = 0; c < RN; c++) store += `    store_out(outBase + i${r} * params.ldc, tileCol + tx + ${c * threadsN}u, acc[${r * RN + c}]);\n`;
    store += '  }\n';
  }

  return PRELUDE + matmulParams.wgsl() + aDecl + bDecl + storageDecl(3, 'out', 'f32', 'write') + /* wgsl */ `
var<workgroup> tile_a: array<vec4<f32>, ${BM * STRIDE}>; // [BM][BK / 4 + 1], vec4 along k
var<workgroup> tile_b: array<vec4<f32>, ${BN * STRIDE}>; // [BN][BK / 4 + 1], vec4 along k

fn load_a4(aBase: u32, i: u32, k: u32) -> vec4<f32> {
  ${loadA4}
}

fn load_b4(bBase: u32, j: u32, k: u32) -> vec4<f32> {
  ${loadB4}
}

fn store_out(rowStart: u32, j: u32, value: f32) {
  if (j < params.n) {
    var total = value;
    if (params.accumulate != 0u) { total = total + out[rowStart + j]; }
    out[rowStart + j] = total;
  }
}

@compute @workgroup_size(${threads}) fn main(${ENTRY_ARGS}) {
  let tilesN = (params.n + ${BN - 1}u) / ${BN}u;
  let tilesM = (params.m + ${BM - 1}u) / ${BM}u;
  let w = workgroup_index(wg, groups);
  let batch = w / (tilesM * tilesN);
  if (batch >= params.batch) { return; }
  let tileRow = ((w % (tilesM * tilesN)) / tilesN) * ${BM}u;
  let tileCol = (w % tilesN) * ${BN}u;
  let tx = lid % ${threadsN}u;
  let ty = lid / ${threadsN}u;
  let aBase = params.aOffset + batch * params.aBatchStride;
  let bBase = params.bOffset + batch * params.bBatchStride;

  var acc: array<f32, ${RM * RN}>;
  for (var k0 = 0u; k0 < params.k; k0 = k0 + ${BK}u) {
    for (var e = lid; e < ${BM * KQ}u; e = e + ${threads}u) {
      ${stageA}
      tile_a[r * ${STRIDE}u + q] = load_a4(aBase, tileRow + r, k0 + q * 4u);
    }
    for (var e = lid; e < ${BN * KQ}u; e = e + ${threads}u) {
      ${stageB}
      tile_b[c * ${STRIDE}u + q] = load_b4(bBase, tileCol + c, k0 + q * 4u);
    }
    workgroupBarrier();
    for (var kq = 0u; kq < ${KQ}u; kq = kq + 1u) {
${compute}    }
    workgroupBarrier();
  }

  let outBase = params.outOffset + batch * params.outBatchStride;
${store}}
`;
}

/**
 * The kernel for CPU adapters (llvmpipe/lavapipe). There a workgroup's invocations are the SIMD lanes of
 * one core; a load whose address differs between lanes becomes a per-lane loop (~15 instructions a lane,
 * a vec4 costing little more than a scalar), while an address that is the same in every lane is one
 * scalar load and a broadcast; loops are masked, so each multiply-add also costs a blend and a spill.
 * So all lanes of a workgroup share its `rows` rows of a, read straight from the storage buffer with
 * uniform addresses (no workgroup memory: in a masked loop its loads are per-lane), and each lane owns
 * `colGroups` groups of 4 columns of b (a vec4 along n for [k, n]; 4 k-steps of one column for [n, k]),
 * the only per-lane loads, each feeding rows x 4 multiply-adds. Rows and columns past the edges are
 * clamped on load (valid memory, results discarded) and masked on store.
 */
export interface StreamConfig {
  threads: number;
  rows: number;
  colGroups: number;
}

/** Measured best on lavapipe (2 cores, AVX2): ~15 GFLOP/s of CPU time at 1024^3. */
export const DEFAULT_STREAM: StreamConfig = { threads: 64, rows: 16, colGroups: 2 };

/** bVec4: b's contiguous axis (n for [k, n], k for [n, k]) comes in aligned runs of 4 (vec4 / two u32 words). */
function streamSource(transA: boolean, transB: boolean, bDtype: DType, config: StreamConfig, bVec4: boolean): string {
  const { threads: T, rows: RM, colGroups: RN } = config;
  const bHalf = bDtype === 'f16' || bDtype === 'bf16';
  const address = operandAddresses(transA, transB);
  const widen = bDtype === 'bf16' ? 'bf16_to_f32' : 'f16_to_f32';
  // Per lane and group: !transB -> columns j..j+3 at one k; transB -> column j at k..k+3.
  const columnsPerGroup = transB ? 1 : 4;
  const BN = T * RN * columnsPerGroup;

  let bDecl = storageDecl(2, 'b', bDtype, 'read') + loadFn('b', bDtype);
  let loadRun: string; // fn load_run(bBase, k, j) -> vec4: 4 consecutive elements along b's contiguous axis
  const next = (q: number) => (transB ? [`k + ${q}u`, 'j'] : ['k', `j + ${q}u`]) as [string, string];
  if (bVec4 && !bHalf) {
    bDecl = '@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;\n';
    loadRun = `return b[(${address.b('k', 'j')}) >> 2u];`;
  } else if (bVec4) {
    loadRun = `let word = (${address.b('k', 'j')}) >> 1u;
  let low = b[word];
  let high = b[word + 1u];
  return vec4<f32>(${widen}(low & 0xffffu), ${widen}(low >> 16u), ${widen}(high & 0xffffu), ${widen}(high >> 16u));`;
  } else {
    // Unaligned: clamp each element into range (the values of clamped ones are never stored).
    const elements = [0, 1, 2, 3].map((q) => {
      const [kq, jq] = next(q);
      return transB
        ? `load_b(${address.b(`min(${kq}, params.k - 1u)`, jq)})`
        : `load_b(${address.b(kq, `min(${jq}, params.n - 1u)`)})`;
    });
    loadRun = `return vec4<f32>(${elements.join(', ')});`;
  }

  let setup = '';
  for (let r = 0; r < RM; r++) setup += `  let i${r} = min(tileRow + ${r}u, params.m - 1u);\n`;
  for (let c = 0; c < RN; c++) {
    setup += transB
      ? `  let j${c} = min(tileCol + tx + ${c * T}u, params.n - 1u);\n`
      : `  let j${c} = min(tileCol + (tx + ${c * T}u) * 4u, ((params.n - 1u) / 4u) * 4u);\n`;
  }
  let body = '';
  if (transB && !bVec4) {
    // 4 partial sums per output (one per k mod 4), added at the end. Past the end of k the clamped loads
    // repeat the last element: `keep` zeroes those terms. (Aligned runs imply k % 4 == 0: no tail.)
    body += '    let keep = vec4<f32>(vec4<u32>(kk, kk + 1u, kk + 2u, kk + 3u) < vec4<u32>(params.k));\n';
    for (let c = 0; c < RN; c++) body += `    let b${c} = load_run(bBase, kk, j${c}) * keep;\n`;
  } else {
    for (let c = 0; c < RN; c++) body += `    let b${c} = load_run(bBase, kk, j${c});\n`;
  }
  if (!transB) {
    for (let r = 0; r < RM; r++) {
      body += `    let a${r} = a[${address.a(`i${r}`, 'kk')}];\n`;
      for (let c = 0; c < RN; c++) body += `    acc[${r * RN + c}] = fma(vec4<f32>(a${r}), b${c}, acc[${r * RN + c}]);\n`;
    }
  } else {
    for (let r = 0; r < RM; r++) {
      const aRun = [0, 1, 2, 3].map((q) => `a[${address.a(`i${r}`, bVec4 ? `kk + ${q}u` : `min(kk + ${q}u, params.k - 1u)`)}]`);
      body += `    let a${r} = vec4<f32>(${aRun.join(', ')});\n`;
      for (let c = 0; c < RN; c++) body += `    acc[${r * RN + c}] = fma(a${r}, b${c}, acc[${r * RN + c}]);\n`;
    }
  }
  // The store is a loop over rows with a data-dependent bound, not unrolled: every store is a per-lane
  // loop on these drivers, and 128 unrolled ones took LLVM ~10 s to compile.
  let store = `  let rowsHere = min(${RM}u, params.m - tileRow);
  for (var r = 0u; r < rowsHere; r = r + 1u) {
    let rowStart = outBase + (tileRow + r) * params.ldc;\n`;
  for (let c = 0; c < RN; c++) {
    if (transB) {
      store += `    let sum${c} = acc[r * ${RN}u + ${c}u];\n`;
      store += `    store_out(rowStart, tileCol + tx + ${c * T}u, sum${c}.x + sum${c}.y + sum${c}.z + sum${c}.w);\n`;
    } else {
      store += `    for (var q = 0u; q < 4u; q = q + 1u) {
      store_out(rowStart, tileCol + (tx + ${c * T}u) * 4u + q, acc[r * ${RN}u + ${c}u][q]);
    }\n`;
    }
  }
  store += '  }\n';

  return PRELUDE + matmulParams.wgsl() + storageDecl(1, 'a', 'f32', 'read') + bDecl + storageDecl(3, 'out', 'f32', 'write') + /* wgsl */ `
fn load_run(bBase: u32, k: u32, j: u32) -> vec4<f32> {
  ${loadRun}
}

fn store_out(rowStart: u32, j: u32, value: f32) {
  if (j < params.n) {
    var total = value;
    if (params.accumulate != 0u) { total = total + out[rowStart + j]; }
    out[rowStart + j] = total;
  }
}

@compute @workgroup_size(${T}) fn main(${ENTRY_ARGS}) {
  let tilesN = (params.n + ${BN - 1}u) / ${BN}u;
  let tilesM = (params.m + ${RM - 1}u) / ${RM}u;
  let w = workgroup_index(wg, groups);
  let batch = w / (tilesM * tilesN);
  if (batch >= params.batch) { return; }
  let tileRow = ((w % (tilesM * tilesN)) / tilesN) * ${RM}u;
  let tileCol = (w % tilesN) * ${BN}u;
  let tx = lid;
  let aBase = params.aOffset + batch * params.aBatchStride;
  let bBase = params.bOffset + batch * params.bBatchStride;
${setup}
  var acc: array<vec4<f32>, ${RM * RN}>;
  for (var kk = 0u; kk < params.k; kk = kk + ${transB ? 4 : 1}u) {
${body}  }

  let outBase = params.outOffset + batch * params.outBatchStride;
${store}}
`;
}

// m = 1: out[j] = sum_k a[k] * b(k, j); GEMV_ROWS outputs per workgroup, GEMV_THREADS_PER_ROW threads each
function gemvSource(transB: boolean, bDtype: DType): string {
  const threads = GEMV_THREADS_PER_ROW * GEMV_ROWS;
  const address = operandAddresses(false, transB);
  return PRELUDE + matmulParams.wgsl() + storageDecl(1, 'a', 'f32', 'read') + storageDecl(2, 'b', bDtype, 'read')
    + storageDecl(3, 'out', 'f32', 'write') + loadFn('b', bDtype) + /* wgsl */ `
var<workgroup> partial: array<f32, ${threads}>;

@compute @workgroup_size(${threads}) fn main(${ENTRY_ARGS}) {
  let groupsPerBatch = (params.n + ${GEMV_ROWS - 1}u) / ${GEMV_ROWS}u;
  let w = workgroup_index(wg, groups);
  let batch = w / groupsPerBatch;
  if (batch >= params.batch) { return; }
  let row = lid / ${GEMV_THREADS_PER_ROW}u;
  let t = lid % ${GEMV_THREADS_PER_ROW}u;
  let j = (w % groupsPerBatch) * ${GEMV_ROWS}u + row;
  let aBase = params.aOffset + batch * params.aBatchStride;
  let bBase = params.bOffset + batch * params.bBatchStride;
  var sum = 0.0;
  if (j < params.n) {
    for (var kk = t; kk < params.k; kk = kk + ${GEMV_THREADS_PER_ROW}u) {
      sum = fma(a[aBase + kk], load_b(${address.b('kk', 'j')}), sum);
    }
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var stride = ${GEMV_THREADS_PER_ROW / 2}u; stride > 0u; stride = stride >> 1u) {
    if (t < stride) { partial[lid] = partial[lid] + partial[lid + stride]; }
    workgroupBarrier();
  }
  if (t == 0u && j < params.n) {
    let at = params.outOffset + batch * params.outBatchStride + j;
    var value = partial[lid];
    if (params.accumulate != 0u) { value = value + out[at]; }
    out[at] = value;
  }
}
`;
}

interface Piece {
  batch0: number;
  batches: number;
  m0: number; m1: number;
  n0: number; n1: number;
  k0: number; k1: number;
}

/** Element ranges [start, end) of a, b and out that a piece touches. */
function pieceRanges(p: MatmulParams, aOffset: number, bOffset: number, piece: Piece) {
  const { m, n, k, transA, transB, aBatchStride, bBatchStride } = p;
  const lastBatch = piece.batch0 + piece.batches - 1;
  const span = (offset: number, batchStride: number, first: number, last: number): [number, number] => {
    const lo = offset + Math.min(piece.batch0 * batchStride, lastBatch * batchStride) + first;
    const hi = offset + Math.max(piece.batch0 * batchStride, lastBatch * batchStride) + last + 1;
    return [lo, hi];
  };
  const a = transA
    ? span(aOffset, aBatchStride, piece.k0 * m + piece.m0, (piece.k1 - 1) * m + piece.m1 - 1)
    : span(aOffset, aBatchStride, piece.m0 * k + piece.k0, (piece.m1 - 1) * k + piece.k1 - 1);
  const b = transB
    ? span(bOffset, bBatchStride, piece.n0 * k + piece.k0, (piece.n1 - 1) * k + piece.k1 - 1)
    : span(bOffset, bBatchStride, piece.k0 * n + piece.n0, (piece.k1 - 1) * n + piece.n1 - 1);
  const out = span(0, m * n, piece.m0 * n + piece.n0, (piece.m1 - 1) * n + piece.n1 - 1);
  return { a, b, out };
}

function halve(piece: Piece, axis: 'batch' | 'm' | 'n' | 'k'): [Piece, Piece] | null {
  // k splits land on multiples of 4 where they can, so pieces keep the vec4 loads.
  const split = (lo: number, hi: number, granule: number) => {
    if (hi - lo <= 1) return null;
    const mid = lo + Math.floor((hi - lo) / 2 / granule) * granule;
    return mid > lo ? mid : lo + Math.floor((hi - lo) / 2);
  };
  if (axis === 'batch') {
    if (piece.batches <= 1) return null;
    const half = Math.floor(piece.batches / 2);
    return [{ ...piece, batches: half }, { ...piece, batch0: piece.batch0 + half, batches: piece.batches - half }];
  }
  const lo = piece[`${axis}0`];
  const hi = piece[`${axis}1`];
  const mid = split(lo, hi, axis === 'k' ? 4 : 1);
  if (mid === null) return null;
  return [{ ...piece, [`${axis}1`]: mid }, { ...piece, [`${axis}0`]: mid }];
}

/** Pieces in execution order: for one (batch, m, n) block, k ranges ascend (later ones accumulate). */
function planPieces(
  rt: WebGpuRuntime, p: MatmulParams, a: WebGpuStorage, aOffset: number, b: WebGpuStorage, bOffset: number, out: WebGpuStorage,
): Piece[] {
  const pieces: Piece[] = [];
  const visit = (piece: Piece): void => {
    const ranges = pieceRanges(p, aOffset, bOffset, piece);
    const aFits = rt.fitsBinding(a, ...ranges.a);
    const bFits = rt.fitsBinding(b, ...ranges.b);
    const outFits = rt.fitsBinding(out, ...ranges.out);
    if (aFits && bFits && outFits) {
      pieces.push(piece);
      return;
    }
    const axes: Array<'batch' | 'm' | 'n' | 'k'> = ['batch'];
    if (!aFits) axes.push(p.transA ? 'k' : 'm');
    if (!bFits) axes.push(p.transB ? 'n' : 'k');
    if (!outFits) axes.push('m');
    axes.push('m', 'n', 'k');
    for (const axis of axes) {
      const halves = halve(piece, axis);
      if (halves !== null) {
        visit(halves[0]);
        visit(halves[1]);
        return;
      }
    }
    throw new Error('matmul: a single element range exceeds the binding limit');
  };
  visit({ batch0: 0, batches: p.batch, m0: 0, m1: p.m, n0: 0, n1: p.n, k0: 0, k1: p.k });
  return pieces;
}

/** Which kernel computes m > 1: the workgroup-tiled one (GPUs) or the streaming one (CPU adapters). */
export type MatmulKernelChoice = ({ kind: 'tiled' } & TileConfig) | ({ kind: 'stream' } & StreamConfig);

/**
 * Per adapter: GPUs get the tiled kernel (and GEMV for m = 1); CPU adapters the streaming kernel, with
 * as many rows per workgroup as m needs (up to 16; a [n, k] b is transposed first from m = 16) and only
 * as many lanes as n needs.
 */
export function defaultMatmulKernel(rt: WebGpuRuntime, m: number, n: number): MatmulKernelChoice {
  if (!rt.cpuAdapter) return { kind: 'tiled', ...DEFAULT_TILE };
  const lanesNeeded = Math.ceil(n / (4 * DEFAULT_STREAM.colGroups));
  const threads = Math.min(DEFAULT_STREAM.threads, Math.max(8, Math.ceil(lanesNeeded / 8) * 8));
  const rows = m >= STREAM_TRANSPOSE_MIN_M ? DEFAULT_STREAM.rows : Math.min(8, 2 ** Math.ceil(Math.log2(m)));
  return { kind: 'stream', ...DEFAULT_STREAM, threads, rows };
}

export function matmul(
  rt: WebGpuRuntime, aStorage: Storage, aOffset: number, bStorage: Storage, bOffset: number, p: MatmulParams,
  choice: MatmulKernelChoice = defaultMatmulKernel(rt, p.m, p.n),
): WebGpuStorage {
  const a = asWebGpuStorage(aStorage);
  const b = asWebGpuStorage(bStorage);
  if (a.dtype !== 'f32') throw new Error(`matmul: a must be f32, got ${a.dtype}`);
  if (b.dtype === 'i32') throw new Error('matmul: b must be a float storage');
  const { batch, m, n, k } = p;
  const out = rt.allocate('f32', batch * m * n);
  if (batch * m * n === 0) return out;
  if (k === 0) {
    rt.free(out);
    return full(rt, batch * m * n, 0, 'f32');
  }

  // On CPU adapters the streaming kernel reads [n, k] b four times less efficiently than [k, n] (each a
  // value feeds one column per lane instead of four): for all but tiny m, transposing b first pays off.
  if (choice.kind === 'stream' && p.transB && m >= STREAM_TRANSPOSE_MIN_M) {
    rt.free(out);
    const bBatches = p.bBatchStride === 0 ? 1 : batch;
    const transposed = copyView(rt, {
      storage: b, shape: [bBatches, k, n], strides: [p.bBatchStride, 1, k], offset: bOffset,
    }, b.dtype);
    const result = matmul(rt, a, aOffset, transposed, 0, { ...p, transB: false, bBatchStride: p.bBatchStride === 0 ? 0 : k * n }, choice);
    rt.free(transposed);
    return result;
  }

  const gemv = m === 1 && choice.kind === 'tiled';
  /** The kernel for one piece and the output tile [tileM, tileN] one workgroup computes. */
  const kernelFor = (aStart: number, bStart: number, pieceK: number): { kernel: Kernel; tileM: number; tileN: number } => {
    // A piece's offsets inside its bindings keep their value mod 4 (windows start on 16-byte boundaries).
    const aligned = (offset: number, ld: number, batchStride: number) =>
      offset % 4 === 0 && ld % 4 === 0 && batchStride % 4 === 0 && pieceK % 4 === 0;
    const alignment: TileAlignment = {
      aVec4: !p.transA && aligned(aStart, k, p.aBatchStride),
      bVec4: p.transB && aligned(bStart, k, p.bBatchStride),
    };
    const layout = `${p.transA ? 'ta' : 'na'}${p.transB ? 'tb' : 'nb'}.${b.dtype}`;
    if (gemv) {
      const kernel = rt.kernel(`matmul.gemv.${layout}`, () => ({
        code: gemvSource(p.transB, b.dtype), bindings: ['read', 'read', 'write'],
      }));
      return { kernel, tileM: 1, tileN: GEMV_ROWS };
    }
    if (choice.kind === 'stream') {
      // b's contiguous axis in vec4 runs: n for [k, n] (f32 only), k for [n, k] (the same test as the tiled kernel).
      const bVec4 = p.transB ? alignment.bVec4 : bStart % 4 === 0 && n % 4 === 0 && p.bBatchStride % 4 === 0;
      const shape = `${choice.threads}x${choice.rows}x${choice.colGroups}`;
      const kernel = rt.kernel(`matmul.stream.${layout}.${bVec4 ? 'b4' : 'b1'}.${shape}`, () => ({
        code: streamSource(p.transA, p.transB, b.dtype, choice, bVec4), bindings: ['read', 'read', 'write'],
      }));
      const columnsPerGroup = p.transB ? 1 : 4;
      return { kernel, tileM: choice.rows, tileN: choice.threads * choice.colGroups * columnsPerGroup };
    }
    const key = `matmul.tiled.${layout}.${alignment.aVec4 ? 'a4' : 'a1'}${alignment.bVec4 ? 'b4' : 'b1'}`
      + `.${choice.threadsN}x${choice.threadsM}x${choice.rowsPerThread}x${choice.colsPerThread}x${choice.tileK}`;
    const kernel = rt.kernel(key, () => ({
      code: tiledSource(p.transA, p.transB, b.dtype, choice, alignment), bindings: ['read', 'read', 'write'],
    }));
    return { kernel, tileM: choice.threadsM * choice.rowsPerThread, tileN: choice.threadsN * choice.colsPerThread };
  };

  for (const piece of planPieces(rt, p, a, aOffset, b, bOffset, out)) {
    const ranges = pieceRanges(p, aOffset, bOffset, piece);
    const aBound = rt.bindRange(a, ...ranges.a);
    const bBound = rt.bindRange(b, ...ranges.b);
    const outBound = rt.bindRange(out, ...ranges.out);
    const pieceM = piece.m1 - piece.m0;
    const pieceN = piece.n1 - piece.n0;
    const aStart = aOffset + piece.batch0 * p.aBatchStride + (p.transA ? piece.k0 * m + piece.m0 : piece.m0 * k + piece.k0);
    const bStart = bOffset + piece.batch0 * p.bBatchStride + (p.transB ? piece.n0 * k + piece.k0 : piece.k0 * n + piece.n0);
    const outStart = piece.batch0 * m * n + piece.m0 * n + piece.n0;
    const packed = matmulParams.pack({
      batch: piece.batches, m: pieceM, n: pieceN, k: piece.k1 - piece.k0,
      lda: p.transA ? m : k, ldb: p.transB ? k : n, ldc: n,
      aOffset: aStart - aBound.base, bOffset: bStart - bBound.base, outOffset: outStart - outBound.base,
      aBatchStride: p.aBatchStride, bBatchStride: p.bBatchStride, outBatchStride: m * n,
      accumulate: piece.k0 > 0 ? 1 : 0,
    });
    const { kernel, tileM, tileN } = kernelFor(aStart - aBound.base, bStart - bBound.base, piece.k1 - piece.k0);
    const workgroups = piece.batches * Math.ceil(pieceM / tileM) * Math.ceil(pieceN / tileN);
    rt.dispatch(kernel, packed, [aBound.binding, bBound.binding, outBound.binding], workgroups);
  }
  return out;
}
