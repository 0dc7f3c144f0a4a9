// Flash-style attention with GQA and a causal offset; memory O(T): no T x S score matrix ever reaches
// global memory, only BQ x BK blocks in workgroup memory.
//   attention: q [B, T, nh, hd], k/v [B, S, kv, hd] -> out [B, T, nh, hd], lse [B, nh, T]
//     One workgroup per (query block of BQ rows, head, batch); key blocks of BK stream through workgroup
//     memory with an online softmax (running max m and sum l per row; out rescaled by exp(m_old - m_new)).
//   attentionBackward: + out, lse, dout -> dq [B, T, nh, hd], dk/dv [B, S, kv, hd], scores recomputed from lse:
//     1. rowDot [B, nh, T] = sum_d dout * out
//     2. dq: per query block, over key blocks: p = exp(q.k scale - lse), ds = p (dout.v - rowDot), dq += scale ds k
//     3. dk/dv: per key block and kv head, over the group's query heads and query blocks:
//        dv += p dout, dk += scale ds q. Each output element is owned by one thread: no atomics, deterministic.
// Query head h reads key/value head floor(h / (nh / kv)); key s is visible to query t iff s <= t + causalOffset.
// Head dims are a uniform; kernels are compiled per head-dim class (power of two), sizing workgroup arrays.
// Binding limit: dispatches take chunks of whole sequences; when one sequence's queries exceed a binding
// (20 000 tokens of 40 x 128 heads is 410 MB), one sequence at a time in chunks of query rows, each binding
// the sequence's keys/values whole (the causal offset moves by the chunk's first query; dk/dv accumulate).
// Threads: TPR threads share each row (query row, or key row in step 3), each owning head dims d = t + TPR * u.

import type { AttentionParams, Storage } from '../backend.ts';
import { asWebGpuStorage, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { ENTRY_ARGS, PRELUDE, params, storageDecl } from './wgsl.ts';

const THREADS_PER_ROW = 8;
/** Finite stand-in for an infinite causal offset (every key visible). */
const NO_MASK_OFFSET = 1 << 30;

const attentionParams = params({
  batch: 'u32', tq: 'u32', tk: 'u32', heads: 'u32', kvHeads: 'u32', group: 'u32', headDim: 'u32', scale: 'f32', causalOffset: 'i32',
  blockInner: 'u32', dimsPerThread: 'u32',
  qOffset: 'u32', kOffset: 'u32', vOffset: 'u32', outOffset: 'u32', lseOffset: 'u32',
  doutOffset: 'u32', rowDotOffset: 'u32', gradOffset: 'u32', grad2Offset: 'u32',
  // Elements between heads in lse / rowDot [B, nh, T] (T; the kernel may see a chunk of T's queries), and
  // whether dk/dv add to what an earlier query chunk wrote.
  lseStride: 'u32', accumulate: 'u32',
});

interface Blocks {
  rows: number; // rows handled by a workgroup (BQ, or BK in the dk/dv kernel)
  inner: number; // rows streamed through (BK, or BQ in the dk/dv kernel)
}

/** The largest (rows, inner) blocks, from 16 x 16 down, whose workgroup arrays fit the device. */
function planBlocks(rt: WebGpuRuntime, floatsFor: (b: Blocks) => number): Blocks {
  let blocks: Blocks = { rows: 16, inner: 16 };
  while (floatsFor(blocks) * 4 > rt.maxWorkgroupStorageBytes) {
    if (blocks.inner > THREADS_PER_ROW) blocks = { ...blocks, inner: blocks.inner / 2 };
    else if (blocks.rows > 1) blocks = { ...blocks, rows: blocks.rows / 2 };
    else throw new Error('attention: head dim too large for this device\'s workgroup memory');
  }
  return blocks;
}

// Loops over head dims and over a block's inner rows run to uniform bounds (params), not constants: on
// LLVM-based drivers (llvmpipe) each workgroup-memory load in a fully unrolled loop becomes a per-lane
// loop of its own, and compiling the unrolled dk/dv kernel took over 20 seconds.

/**
 * Kernels are compiled per head-dim class (the next power of two, at least 16), which sizes workgroup
 * arrays; the head dim itself is a uniform, so loops over it stay loops (compiling fully unrolled
 * 128-long dot products takes LLVM-based drivers tens of seconds).
 */
function headDimClass(headDim: number): number {
  return Math.max(16, 2 ** Math.ceil(Math.log2(headDim)));
}

/** WGSL indexing helpers shared by the three kernels. HD: the head dim (set from params at entry). */
function layoutCode(hdClass: number): string {
  return /* wgsl */ `
var<private> HD: u32;
const TPR = ${THREADS_PER_ROW}u;
const DPT = ${Math.ceil(hdClass / THREADS_PER_ROW)}u; // most head dims per thread: d = t + TPR * u

// element offset of (b, t, h, 0) in a [B, T, H, hd] tensor
fn token_base(b: u32, t: u32, h: u32, tokens: u32, headCount: u32) -> u32 {
  return ((b * tokens + t) * headCount + h) * HD;
}
fn visible(s: u32, t: u32) -> bool {
  return s < params.tk && i32(s) <= i32(t) + params.causalOffset;
}
`;
}

// q, k, v -> out, lse
/** WGSL: which (batch b, head h, query block q0) this workgroup owns, its kv head, and the thread's row/lane. */
const QUERY_BLOCK_PROLOGUE = `  HD = params.headDim;
  let blocksPerHead = (params.tq + BQ - 1u) / BQ;
  let w = workgroup_index(wg, groups);
  let b = w / (blocksPerHead * params.heads);
  if (b >= params.batch) { return; }
  let h = (w / blocksPerHead) % params.heads;
  let q0 = (w % blocksPerHead) * BQ;
  let kvh = h / params.group;
  let r = lid / TPR;
  let t = lid % TPR;
  let row = q0 + r;
`;

/** WGSL: the workgroup's `threads` invocations copy keys/values s0..s0+BK of kv head kvh into k_tile/v_tile
 * (zeros past tk). Shared by the forward and the dq backward. */
function loadKeyValueTile(threads: number): string {
  return `    for (var e = lid; e < BK * HD; e = e + ${threads}u) {
      let s = s0 + e / HD;
      var kv = 0.0;
      var vv = 0.0;
      if (s < params.tk) {
        let at = token_base(b, s, kvh, params.tk, params.kvHeads) + e % HD;
        kv = k[params.kOffset + at];
        vv = v[params.vOffset + at];
      }
      k_tile[e] = kv;
      v_tile[e] = vv;
    }
`;
}

function forwardSource(hdClass: number, { rows: BQ, inner: BK }: Blocks): string {
  const threads = BQ * THREADS_PER_ROW;
  const keysPerThread = BK / THREADS_PER_ROW;
  return PRELUDE + attentionParams.wgsl() + storageDecl(1, 'q', 'f32', 'read') + storageDecl(2, 'k', 'f32', 'read')
    + storageDecl(3, 'v', 'f32', 'read') + storageDecl(4, 'out', 'f32', 'write') + storageDecl(5, 'lse', 'f32', 'write')
    + layoutCode(hdClass) + /* wgsl */ `
const BQ = ${BQ}u;
const BK = ${BK}u;
var<workgroup> q_tile: array<f32, ${BQ * hdClass}>;   // [BQ][hd]
var<workgroup> k_tile: array<f32, ${BK * hdClass}>;   // [BK][hd]
var<workgroup> v_tile: array<f32, ${BK * hdClass}>;   // [BK][hd]
var<workgroup> p_tile: array<f32, ${BQ * BK}>;        // [BQ][BK]: scores, then probabilities
var<workgroup> l_parts: array<f32, ${threads}>;       // per-thread partial row sums

@compute @workgroup_size(${threads}) fn main(${ENTRY_ARGS}) {
${QUERY_BLOCK_PROLOGUE}
  for (var e = lid; e < BQ * HD; e = e + ${threads}u) {
    let qr = q0 + e / HD;
    var value = 0.0;
    if (qr < params.tq) { value = q[params.qOffset + token_base(b, qr, h, params.tq, params.heads) + e % HD]; }
    q_tile[e] = value;
  }

  var acc: array<f32, DPT>;
  var m = neg_inf();
  var l = 0.0;
  // Keys past the last visible one of the block's last row are never needed.
  let lastRow = min(q0 + BQ, params.tq) - 1u;
  let keyEnd = u32(clamp(i32(lastRow) + params.causalOffset + 1, 0, i32(params.tk)));
  for (var s0 = 0u; s0 < keyEnd; s0 = s0 + BK) {
    workgroupBarrier();
${loadKeyValueTile(threads)}    workgroupBarrier();
    for (var x = 0u; x < ${keysPerThread}u; x = x + 1u) {
      let j = t + TPR * x;
      var score = neg_inf();
      if (visible(s0 + j, row)) {
        var dot = 0.0;
        for (var d = 0u; d < HD; d = d + 1u) { dot = fma(q_tile[r * HD + d], k_tile[j * HD + d], dot); }
        score = dot * params.scale;
      }
      p_tile[r * BK + j] = score;
    }
    workgroupBarrier();
    var blockMax = neg_inf();
    for (var j = 0u; j < params.blockInner; j = j + 1u) { blockMax = max(blockMax, p_tile[r * BK + j]); }
    let mNew = max(m, blockMax);
    var alpha = 1.0;
    if (mNew != neg_inf()) { alpha = exp(m - mNew); }
    workgroupBarrier(); // every thread of the row has read the scores before they become probabilities
    for (var x = 0u; x < ${keysPerThread}u; x = x + 1u) {
      let j = t + TPR * x;
      var p = 0.0;
      if (mNew != neg_inf()) { p = exp(p_tile[r * BK + j] - mNew); }
      p_tile[r * BK + j] = p;
      l = l * select(1.0, alpha, x == 0u) + p;
    }
    m = mNew;
    workgroupBarrier();
    for (var u = 0u; u < params.dimsPerThread; u = u + 1u) {
      let d = t + TPR * u;
      if (d < HD) {
        var sum = acc[u] * alpha;
        for (var j = 0u; j < params.blockInner; j = j + 1u) { sum = fma(p_tile[r * BK + j], v_tile[j * HD + d], sum); }
        acc[u] = sum;
      }
    }
  }

  l_parts[lid] = l;
  workgroupBarrier();
  var total = 0.0;
  for (var x = 0u; x < TPR; x = x + 1u) { total = total + l_parts[r * TPR + x]; }
  if (row < params.tq) {
    let base = params.outOffset + token_base(b, row, h, params.tq, params.heads);
    for (var u = 0u; u < params.dimsPerThread; u = u + 1u) {
      let d = t + TPR * u;
      if (d < HD) { out[base + d] = select(0.0, acc[u] / total, total > 0.0); }
    }
    if (t == 0u) {
      lse[params.lseOffset + (b * params.heads + h) * params.lseStride + row] = select(neg_inf(), m + log(total), total > 0.0);
    }
  }
}
`;
}

// dout, out [B, T, nh, hd] -> rowDot [B, nh, T] = sum_d dout * out
function rowDotSource(hdClass: number): string {
  return PRELUDE + attentionParams.wgsl() + storageDecl(1, 'dout', 'f32', 'read') + storageDecl(2, 'out', 'f32', 'read')
    + storageDecl(3, 'row_dot', 'f32', 'write') + layoutCode(hdClass) + /* wgsl */ `
@compute @workgroup_size(64) fn main(${ENTRY_ARGS}) {
  HD = params.headDim;
  let i = workgroup_index(wg, groups) * 64u + lid; // i = (b * nh + h) * T + t
  if (i >= params.batch * params.heads * params.tq) { return; }
  let t = i % params.tq;
  let h = (i / params.tq) % params.heads;
  let b = i / (params.tq * params.heads);
  let base = token_base(b, t, h, params.tq, params.heads);
  var dot = 0.0;
  for (var d = 0u; d < HD; d = d + 1u) { dot = fma(dout[params.doutOffset + base + d], out[params.outOffset + base + d], dot); }
  row_dot[params.rowDotOffset + (b * params.heads + h) * params.lseStride + t] = dot;
}
`;
}

// q, k, v, lse, dout, rowDot -> dq
function dqSource(hdClass: number, { rows: BQ, inner: BK }: Blocks): string {
  const threads = BQ * THREADS_PER_ROW;
  const keysPerThread = BK / THREADS_PER_ROW;
  return PRELUDE + attentionParams.wgsl() + storageDecl(1, 'q', 'f32', 'read') + storageDecl(2, 'k', 'f32', 'read')
    + storageDecl(3, 'v', 'f32', 'read') + storageDecl(4, 'lse', 'f32', 'read') + storageDecl(5, 'dout', 'f32', 'read')
    + storageDecl(6, 'row_dot', 'f32', 'read') + storageDecl(7, 'dq', 'f32', 'write') + layoutCode(hdClass) + /* wgsl */ `
const BQ = ${BQ}u;
const BK = ${BK}u;
var<workgroup> q_tile: array<f32, ${BQ * hdClass}>;    // [BQ][hd]
var<workgroup> do_tile: array<f32, ${BQ * hdClass}>;   // [BQ][hd]
var<workgroup> k_tile: array<f32, ${BK * hdClass}>;    // [BK][hd]
var<workgroup> v_tile: array<f32, ${BK * hdClass}>;    // [BK][hd]
var<workgroup> ds_tile: array<f32, ${BQ * BK}>;        // [BQ][BK]

@compute @workgroup_size(${threads}) fn main(${ENTRY_ARGS}) {
${QUERY_BLOCK_PROLOGUE}
  for (var e = lid; e < BQ * HD; e = e + ${threads}u) {
    let qr = q0 + e / HD;
    var qv = 0.0;
    var dv = 0.0;
    if (qr < params.tq) {
      let at = token_base(b, qr, h, params.tq, params.heads) + e % HD;
      qv = q[params.qOffset + at];
      dv = dout[params.doutOffset + at];
    }
    q_tile[e] = qv;
    do_tile[e] = dv;
  }
  var rowLse = neg_inf();
  var rowDot = 0.0;
  if (row < params.tq) {
    let at = (b * params.heads + h) * params.lseStride + row;
    rowLse = lse[params.lseOffset + at];
    rowDot = row_dot[params.rowDotOffset + at];
  }

  var acc: array<f32, DPT>;
  let lastRow = min(q0 + BQ, params.tq) - 1u;
  let keyEnd = u32(clamp(i32(lastRow) + params.causalOffset + 1, 0, i32(params.tk)));
  for (var s0 = 0u; s0 < keyEnd; s0 = s0 + BK) {
    workgroupBarrier();
${loadKeyValueTile(threads)}    workgroupBarrier();
    for (var x = 0u; x < ${keysPerThread}u; x = x + 1u) {
      let j = t + TPR * x;
      var ds = 0.0;
      if (visible(s0 + j, row) && rowLse != neg_inf()) {
        var score = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < HD; d = d + 1u) {
          score = fma(q_tile[r * HD + d], k_tile[j * HD + d], score);
          dp = fma(do_tile[r * HD + d], v_tile[j * HD + d], dp);
        }
        let p = exp(score * params.scale - rowLse);
        ds = p * (dp - rowDot);
      }
      ds_tile[r * BK + j] = ds;
    }
    workgroupBarrier();
    for (var u = 0u; u < params.dimsPerThread; u = u + 1u) {
      let d = t + TPR * u;
      if (d < HD) {
        var sum = acc[u];
        for (var j = 0u; j < params.blockInner; j = j + 1u) { sum = fma(ds_tile[r * BK + j], k_tile[j * HD + d], sum); }
        acc[u] = sum;
      }
    }
  }

  if (row < params.tq) {
    let base = params.gradOffset + token_base(b, row, h, params.tq, params.heads);
    for (var u = 0u; u < params.dimsPerThread; u = u + 1u) {
      let d = t + TPR * u;
      if (d < HD) { dq[base + d] = acc[u] * params.scale; }
    }
  }
}
`;
}

// q, k, v, lse, dout, rowDot -> dk, dv (one workgroup per key block of one kv head)
function dkvSource(hdClass: number, { rows: BK, inner: BQ }: Blocks): string {
  const threads = BK * THREADS_PER_ROW;
  const pairsPerThread = Math.ceil((BK * BQ) / threads);
  return PRELUDE + attentionParams.wgsl() + storageDecl(1, 'q', 'f32', 'read') + storageDecl(2, 'k', 'f32', 'read')
    + storageDecl(3, 'v', 'f32', 'read') + storageDecl(4, 'lse', 'f32', 'read') + storageDecl(5, 'dout', 'f32', 'read')
    + storageDecl(6, 'row_dot', 'f32', 'read') + storageDecl(7, 'dk', 'f32', 'write') + storageDecl(8, 'dv', 'f32', 'write')
    + layoutCode(hdClass) + /* wgsl */ `
const BQ = ${BQ}u;
const BK = ${BK}u;
var<workgroup> k_tile: array<f32, ${BK * hdClass}>;    // [BK][hd], this workgroup's keys
var<workgroup> v_tile: array<f32, ${BK * hdClass}>;    // [BK][hd]
var<workgroup> q_tile: array<f32, ${BQ * hdClass}>;    // [BQ][hd]
var<workgroup> do_tile: array<f32, ${BQ * hdClass}>;   // [BQ][hd]
var<workgroup> p_tile: array<f32, ${BK * BQ}>;         // [BK][BQ]
var<workgroup> ds_tile: array<f32, ${BK * BQ}>;        // [BK][BQ]
var<workgroup> row_lse: array<f32, ${BQ}>;
var<workgroup> row_dots: array<f32, ${BQ}>;

@compute @workgroup_size(${threads}) fn main(${ENTRY_ARGS}) {
  HD = params.headDim;
  let blocksPerHead = (params.tk + BK - 1u) / BK;
  let w = workgroup_index(wg, groups);
  let b = w / (blocksPerHead * params.kvHeads);
  if (b >= params.batch) { return; }
  let kvh = (w / blocksPerHead) % params.kvHeads;
  let s0 = (w % blocksPerHead) * BK;
  let jr = lid / TPR; // this thread's key row within the block
  let t = lid % TPR;

  for (var e = lid; e < BK * HD; e = e + ${threads}u) {
    let s = s0 + e / HD;
    var kv = 0.0;
    var vv = 0.0;
    if (s < params.tk) {
      let at = token_base(b, s, kvh, params.tk, params.kvHeads) + e % HD;
      kv = k[params.kOffset + at];
      vv = v[params.vOffset + at];
    }
    k_tile[e] = kv;
    v_tile[e] = vv;
  }

  var dkAcc: array<f32, DPT>;
  var dvAcc: array<f32, DPT>;
  // The first query that sees key s0 is t = s0 - causalOffset.
  let firstQuery = u32(clamp(i32(s0) - params.causalOffset, 0, i32(params.tq)));
  let qStart = (firstQuery / BQ) * BQ;
  for (var hg = 0u; hg < params.group; hg = hg + 1u) {
    let h = kvh * params.group + hg;
    for (var q0 = qStart; q0 < params.tq; q0 = q0 + BQ) {
      workgroupBarrier();
      for (var e = lid; e < BQ * HD; e = e + ${threads}u) {
        let qr = q0 + e / HD;
        var qv = 0.0;
        var dv = 0.0;
        if (qr < params.tq) {
          let at = token_base(b, qr, h, params.tq, params.heads) + e % HD;
          qv = q[params.qOffset + at];
          dv = dout[params.doutOffset + at];
        }
        q_tile[e] = qv;
        do_tile[e] = dv;
      }
      for (var e = lid; e < BQ; e = e + ${threads}u) {
        var rl = neg_inf();
        var rd = 0.0;
        if (q0 + e < params.tq) {
          let at = (b * params.heads + h) * params.lseStride + q0 + e;
          rl = lse[params.lseOffset + at];
          rd = row_dot[params.rowDotOffset + at];
        }
        row_lse[e] = rl;
        row_dots[e] = rd;
      }
      workgroupBarrier();
      for (var x = 0u; x < ${pairsPerThread}u; x = x + 1u) {
        let pair = lid + ${threads}u * x; // pair = j * BQ + i
        if (pair < BK * BQ) {
          let j = pair / BQ;
          let i = pair % BQ;
          var p = 0.0;
          var ds = 0.0;
          if (visible(s0 + j, q0 + i) && q0 + i < params.tq && row_lse[i] != neg_inf()) {
            var score = 0.0;
            var dp = 0.0;
            for (var d = 0u; d < HD; d = d + 1u) {
              score = fma(q_tile[i * HD + d], k_tile[j * HD + d], score);
              dp = fma(do_tile[i * HD + d], v_tile[j * HD + d], dp);
            }
            p = exp(score * params.scale - row_lse[i]);
            ds = p * (dp - row_dots[i]);
          }
          p_tile[pair] = p;
          ds_tile[pair] = ds;
        }
      }
      workgroupBarrier();
      for (var u = 0u; u < params.dimsPerThread; u = u + 1u) {
        let d = t + TPR * u;
        if (d < HD) {
          var dvSum = dvAcc[u];
          var dkSum = dkAcc[u];
          for (var i = 0u; i < params.blockInner; i = i + 1u) {
            dvSum = fma(p_tile[jr * BQ + i], do_tile[i * HD + d], dvSum);
            dkSum = fma(ds_tile[jr * BQ + i], q_tile[i * HD + d], dkSum);
          }
          dvAcc[u] = dvSum;
          dkAcc[u] = dkSum;
        }
      }
    }
  }

  let s = s0 + jr;
  if (s < params.tk) {
    let base = token_base(b, s, kvh, params.tk, params.kvHeads);
    for (var u = 0u; u < params.dimsPerThread; u = u + 1u) {
      let d = t + TPR * u;
      if (d < HD) {
        var dkValue = dkAcc[u] * params.scale;
        var dvValue = dvAcc[u];
        if (params.accumulate != 0u) {
          dkValue = dkValue + dk[params.gradOffset + base + d];
          dvValue = dvValue + dv[params.grad2Offset + base + d];
        }
        dk[params.gradOffset + base + d] = dkValue;
        dv[params.grad2Offset + base + d] = dvValue;
      }
    }
  }
}
`;
}

function checkShapes(p: AttentionParams): void {
  if (p.heads % p.kvHeads !== 0) throw new Error(`attention: heads ${p.heads} is not a multiple of kvHeads ${p.kvHeads}`);
}

function baseValues(p: AttentionParams, batch: number, blocks: Blocks) {
  const offset = Number.isFinite(p.causalOffset)
    ? Math.max(-NO_MASK_OFFSET, Math.min(NO_MASK_OFFSET, Math.floor(p.causalOffset)))
    : (p.causalOffset > 0 ? NO_MASK_OFFSET : -NO_MASK_OFFSET);
  return {
    batch, tq: p.tq, tk: p.tk, heads: p.heads, kvHeads: p.kvHeads, group: p.heads / p.kvHeads, headDim: p.headDim, scale: p.scale,
    causalOffset: offset, qOffset: 0, kOffset: 0, vOffset: 0, outOffset: 0, lseOffset: 0,
    doutOffset: 0, rowDotOffset: 0, gradOffset: 0, grad2Offset: 0, lseStride: p.tq, accumulate: 0,
    blockInner: blocks.inner, dimsPerThread: Math.ceil(p.headDim / THREADS_PER_ROW),
  };
}

/** What an operand holds: query rows [B, T, nh, hd], keys/values [B, S, kv, hd], or per-head rows [B, nh, T] (lse, rowDot). */
type Role = 'query' | 'key' | 'row';

/** One dispatch's share: batches [batch0, batch0 + batches) and, of each, queries [t0, t0 + tc); bindings in operand order. */
interface Part {
  batches: number;
  t0: number;
  tc: number;
  bindings: GPUBufferBinding[];
  offsets: number[];
}

/**
 * The dispatches that keep every binding under the limit: chunks of whole sequences (rowChunks over the batch)
 * while one sequence's operands fit a binding, else one sequence at a time in chunks of query rows, each
 * binding its queries' rows, all of the sequence's keys and values, and the span of lse/rowDot rows it uses.
 */
function plan(rt: WebGpuRuntime, p: AttentionParams, operands: ReadonlyArray<[Storage, Role]>): Part[] {
  const elements: Record<Role, number> = {
    query: p.tq * p.heads * p.headDim, key: p.tk * p.kvHeads * p.headDim, row: p.heads * p.tq,
  };
  const slack = rt.offsetAlignment + 4;
  const ops = operands.map(([storage, role]) => ({ storage: asWebGpuStorage(storage), role }));
  const fits = (bytes: number) => bytes + slack <= rt.maxBindingBytes;
  const above = ops.filter((op) => op.storage.byteSize > rt.maxBindingBytes);
  if (above.every((op) => fits(elements[op.role] * 4))) {
    return rt.rowChunks(p.batch, ops.map((op) => ({ storage: op.storage, rowStride: elements[op.role] })))
      .map((chunk) => ({ batches: chunk.rows, t0: 0, tc: p.tq, bindings: chunk.bindings, offsets: chunk.offsets }));
  }
  const shape = `q [${p.batch}, ${p.tq}, ${p.heads}, ${p.headDim}], k/v [${p.batch}, ${p.tk}, ${p.kvHeads}, ${p.headDim}] f32`;
  const rowBytes = p.heads * p.headDim * 4;
  for (const op of above) {
    const bytes = op.role === 'key' ? elements.key * 4 : op.role === 'row' ? elements.row * 4 : rowBytes;
    if (!fits(bytes)) {
      const what = op.role === 'key' ? 'one sequence\'s keys or values' : op.role === 'row' ? 'one sequence\'s lse rows' : 'one query row';
      throw new Error(`attention (${shape}): ${what} (${bytes} bytes) exceed the ${rt.maxBindingBytes}-byte binding limit`);
    }
  }
  const tc = Math.max(1, Math.floor((rt.maxBindingBytes - slack) / rowBytes));
  const parts: Part[] = [];
  for (let b = 0; b < p.batch; b++) {
    for (let t0 = 0; t0 < p.tq; t0 += tc) {
      const count = Math.min(tc, p.tq - t0);
      const bindings: GPUBufferBinding[] = [];
      const offsets: number[] = [];
      for (const { storage, role } of ops) {
        const base = b * elements[role];
        const [start, end] = role === 'query'
          ? [base + t0 * p.heads * p.headDim, base + (t0 + count) * p.heads * p.headDim]
          : role === 'key' ? [base, base + elements.key] : [base + t0, base + (p.heads - 1) * p.tq + t0 + count];
        const bound = rt.bindRange(storage, start, end);
        bindings.push(bound.binding);
        offsets.push(start - bound.base);
      }
      parts.push({ batches: 1, t0, tc: count, bindings, offsets });
    }
  }
  return parts;
}

/** Uniforms of one part: its batches and queries, the causal offset moved by its first query. */
function partValues(p: AttentionParams, part: Part, blocks: Blocks) {
  const values = baseValues(p, part.batches, blocks);
  return { ...values, tq: part.tc, causalOffset: values.causalOffset + part.t0, accumulate: part.t0 > 0 ? 1 : 0 };
}

export function attention(
  rt: WebGpuRuntime, q: Storage, k: Storage, v: Storage, p: AttentionParams,
): { out: WebGpuStorage; lse: WebGpuStorage } {
  checkShapes(p);
  const qElements = p.tq * p.heads * p.headDim;
  const out = rt.allocate('f32', p.batch * qElements);
  const lse = rt.allocate('f32', p.batch * p.heads * p.tq);
  if (p.batch * p.tq * p.heads === 0) return { out, lse };
  const hd = headDimClass(p.headDim);
  const blocks = planBlocks(rt, (b) => b.rows * hd + 2 * b.inner * hd + b.rows * b.inner + b.rows * THREADS_PER_ROW);
  const kernel = rt.kernel(`attention.forward.hd${hd}.${blocks.rows}x${blocks.inner}`, () => ({
    code: forwardSource(hd, blocks), bindings: ['read', 'read', 'read', 'write', 'write'],
  }));
  const parts = plan(rt, p, [[q, 'query'], [k, 'key'], [v, 'key'], [out, 'query'], [lse, 'row']]);
  for (const part of parts) {
    const [qOffset, kOffset, vOffset, outOffset, lseOffset] = part.offsets as [number, number, number, number, number];
    const packed = attentionParams.pack({ ...partValues(p, part, blocks), qOffset, kOffset, vOffset, outOffset, lseOffset });
    rt.dispatch(kernel, packed, part.bindings, part.batches * p.heads * Math.ceil(part.tc / blocks.rows));
  }
  return { out, lse };
}

export function attentionBackward(
  rt: WebGpuRuntime, q: Storage, k: Storage, v: Storage, out: Storage, lse: Storage, dout: Storage, p: AttentionParams,
): { dq: WebGpuStorage; dk: WebGpuStorage; dv: WebGpuStorage } {
  checkShapes(p);
  const hd = headDimClass(p.headDim);
  const qElements = p.tq * p.heads * p.headDim;
  const kvElements = p.tk * p.kvHeads * p.headDim;
  const dq = rt.allocate('f32', p.batch * qElements);
  const dk = rt.allocate('f32', p.batch * kvElements);
  const dv = rt.allocate('f32', p.batch * kvElements);
  if (p.batch === 0) return { dq, dk, dv };
  const rowDot = rt.allocate('f32', p.batch * p.heads * p.tq);

  const rowDotKernel = rt.kernel(`attention.rowDot.hd${hd}`, () => ({ code: rowDotSource(hd), bindings: ['read', 'read', 'write'] }));
  for (const part of plan(rt, p, [[dout, 'query'], [out, 'query'], [rowDot, 'row']])) {
    const [doutOffset, outOffset, rowDotOffset] = part.offsets as [number, number, number];
    const packed = attentionParams.pack({ ...partValues(p, part, { rows: 1, inner: 1 }), doutOffset, outOffset, rowDotOffset });
    rt.dispatch(rowDotKernel, packed, part.bindings, Math.ceil((part.batches * p.heads * part.tc) / 64));
  }

  const inputs: Array<[Storage, Role]> = [[q, 'query'], [k, 'key'], [v, 'key'], [lse, 'row'], [dout, 'query'], [rowDot, 'row']];
  const dqBlocks = planBlocks(rt, (b) => 2 * b.rows * hd + 2 * b.inner * hd + b.rows * b.inner);
  const dqKernel = rt.kernel(`attention.dq.hd${hd}.${dqBlocks.rows}x${dqBlocks.inner}`, () => ({
    code: dqSource(hd, dqBlocks), bindings: ['read', 'read', 'read', 'read', 'read', 'read', 'write'],
  }));
  for (const part of plan(rt, p, [...inputs, [dq, 'query']])) {
    const [qOffset, kOffset, vOffset, lseOffset, doutOffset, rowDotOffset, gradOffset] = part.offsets as number[] as
      [number, number, number, number, number, number, number];
    const packed = attentionParams.pack({
      ...partValues(p, part, dqBlocks), qOffset, kOffset, vOffset, lseOffset, doutOffset, rowDotOffset, gradOffset,
    });
    rt.dispatch(dqKernel, packed, part.bindings, part.batches * p.heads * Math.ceil(part.tc / dqBlocks.rows));
  }

  // Over query chunks, dk/dv accumulate (partValues sets accumulate past the first chunk).
  const dkvBlocks = planBlocks(rt, (b) => 2 * b.rows * hd + 2 * b.inner * hd + 2 * b.rows * b.inner + 2 * b.inner);
  const dkvKernel = rt.kernel(`attention.dkv.hd${hd}.${dkvBlocks.rows}x${dkvBlocks.inner}`, () => ({
    code: dkvSource(hd, dkvBlocks), bindings: ['read', 'read', 'read', 'read', 'read', 'read', 'write', 'write'],
  }));
  for (const part of plan(rt, p, [...inputs, [dk, 'key'], [dv, 'key']])) {
    const [qOffset, kOffset, vOffset, lseOffset, doutOffset, rowDotOffset, gradOffset, grad2Offset] = part.offsets as
      number[] as [number, number, number, number, number, number, number, number];
    const packed = attentionParams.pack({
      ...partValues(p, part, dkvBlocks), qOffset, kOffset, vOffset, lseOffset, doutOffset, rowDotOffset, gradOffset,
      grad2Offset,
    });
    rt.dispatch(dkvKernel, packed, part.bindings, part.batches * p.kvHeads * Math.ceil(p.tk / dkvBlocks.rows));
  }
  rt.free(rowDot);
  return { dq, dk, dv };
}
