// Losses over logit rows, one workgroup per row (long rows, V = 151936, stream through registers):
//   crossEntropy: logits [R, V], targets i32 [R], mask [R] -> loss [R] = mask * (lse - logit[target_id])
//   crossEntropyBackward: dRow [R] -> dlogits [R, V] = dRow * (softmax(logits) - onehot(target_id))
//   klDiv: p, q logits [R, V] -> [R] = sum softmax(p) * (log_softmax(p) - log_softmax(q))
//   klDivBackward: with P, Q the softmaxes, L = log P - log Q: dp = dRow * P * (L - KL), dq = dRow * (Q - P)
// Rows whose mask / dRow is 0 are not read (the CPU reference skips them too). A target_id outside [0, V) in
// a live row gives NaN: a GPU kernel cannot throw, and NaN cannot go unnoticed in a loss.

import type { Storage } from '../backend.ts';
import { asWebGpuStorage, type Kernel, type RowChunkOperand, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { WORKGROUP, rowLogSumExp } from './softmax.ts';
import { ENTRY_ARGS, PRELUDE, params, storageDecl, workgroupReductions } from './wgsl.ts';

/** offsetN: element offset, inside binding N, of the chunk's first row (row kernels are chunked by rowChunks). */
const lossParams = params({
  rows: 'u32', vocab: 'u32', offset1: 'u32', offset2: 'u32', offset3: 'u32', offset4: 'u32', offset5: 'u32',
});

/** A per-row scale read by thread 0 and broadcast as a uniform value, so rows can be skipped before barriers. */
const ROW_SCALE = /* wgsl */ `
var<workgroup> row_scale_shared: f32;
fn uniform_row_scale(lid: u32, value_of_thread_0: f32) -> f32 {
  if (lid == 0u) { row_scale_shared = value_of_thread_0; }
  return workgroupUniformLoad(&row_scale_shared);
}
`;

const PRELUDE_ROWS = PRELUDE + lossParams.wgsl() + workgroupReductions(WORKGROUP) + ROW_SCALE;

// logits [R, V], targets [R], mask [R] -> loss [R]
const CROSS_ENTROPY_SOURCE = PRELUDE_ROWS + storageDecl(1, 'logits', 'f32', 'read') + storageDecl(2, 'targets', 'i32', 'read')
  + storageDecl(3, 'mask', 'f32', 'read') + storageDecl(4, 'loss', 'f32', 'write')
  + rowLogSumExp('row_lse', (e) => `logits[${e}]`) + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let row = workgroup_index(wg, groups);
  if (row >= params.rows) { return; }
  let weight = uniform_row_scale(lid, mask[params.offset3 + row]);
  if (weight == 0.0) {
    if (lid == 0u) { loss[params.offset4 + row] = 0.0; }
    return;
  }
  let base = params.offset1 + row * params.vocab;
  let lse = row_lse(lid, base, params.vocab);
  if (lid == 0u) {
    let target_id = targets[params.offset2 + row];
    var picked = nan_f32();
    if (target_id >= 0 && u32(target_id) < params.vocab) { picked = logits[base + u32(target_id)]; }
    loss[params.offset4 + row] = weight * (lse - picked);
  }
}
`;

// logits [R, V], targets [R], dRow [R] -> dlogits [R, V]
const CROSS_ENTROPY_BACKWARD_SOURCE = PRELUDE_ROWS + storageDecl(1, 'logits', 'f32', 'read') + storageDecl(2, 'targets', 'i32', 'read')
  + storageDecl(3, 'd_row', 'f32', 'read') + storageDecl(4, 'dlogits', 'f32', 'write')
  + rowLogSumExp('row_lse', (e) => `logits[${e}]`) + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let row = workgroup_index(wg, groups);
  if (row >= params.rows) { return; }
  let g = uniform_row_scale(lid, d_row[params.offset3 + row]);
  let outBase = params.offset4 + row * params.vocab;
  if (g == 0.0) {
    for (var c = lid; c < params.vocab; c = c + ${WORKGROUP}u) { dlogits[outBase + c] = 0.0; }
    return;
  }
  let base = params.offset1 + row * params.vocab;
  let lse = row_lse(lid, base, params.vocab);
  let target_id = targets[params.offset2 + row];
  let valid = target_id >= 0 && u32(target_id) < params.vocab;
  for (var c = lid; c < params.vocab; c = c + ${WORKGROUP}u) {
    var value = g * exp(logits[base + c] - lse);
    if (valid && c == u32(target_id)) { value = value - g; }
    if (!valid) { value = nan_f32(); }
    dlogits[outBase + c] = value;
  }
}
`;

const KL_ROW = rowLogSumExp('row_lse_p', (e) => `p[${e}]`) + rowLogSumExp('row_lse_q', (e) => `q[${e}]`) + /* wgsl */ `
// KL(softmax(p) || softmax(q)) of one row, given both log-sum-exps.
fn row_kl(lid: u32, pBase: u32, qBase: u32, cols: u32, lseP: f32, lseQ: f32) -> f32 {
  var partial = 0.0;
  for (var c = lid; c < cols; c = c + ${WORKGROUP}u) {
    let logP = p[pBase + c] - lseP;
    partial = partial + exp(logP) * (logP - (q[qBase + c] - lseQ));
  }
  return workgroup_sum(lid, partial);
}
`;

/** WGSL: this workgroup's row, both log-sum-exps and the row's KL, shared by forward and backward. */
const KL_ROW_SETUP = `  let row = workgroup_index(wg, groups);
  if (row >= params.rows) { return; }
  let pBase = params.offset1 + row * params.vocab;
  let qBase = params.offset2 + row * params.vocab;
  let lseP = row_lse_p(lid, pBase, params.vocab);
  let lseQ = row_lse_q(lid, qBase, params.vocab);
  let total = row_kl(lid, pBase, qBase, params.vocab, lseP, lseQ);
`;

// p, q [R, V] -> kl [R]
const KL_SOURCE = PRELUDE_ROWS + storageDecl(1, 'p', 'f32', 'read') + storageDecl(2, 'q', 'f32', 'read')
  + storageDecl(3, 'kl', 'f32', 'write') + KL_ROW + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
${KL_ROW_SETUP}  if (lid == 0u) { kl[params.offset3 + row] = total; }
}
`;

// p, q [R, V], dRow [R] -> dp, dq [R, V]
const KL_BACKWARD_SOURCE = PRELUDE_ROWS + storageDecl(1, 'p', 'f32', 'read') + storageDecl(2, 'q', 'f32', 'read')
  + storageDecl(3, 'd_row', 'f32', 'read') + storageDecl(4, 'dp', 'f32', 'write') + storageDecl(5, 'dq', 'f32', 'write')
  + KL_ROW + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
${KL_ROW_SETUP}  let g = d_row[params.offset3 + row];
  for (var c = lid; c < params.vocab; c = c + ${WORKGROUP}u) {
    let logP = p[pBase + c] - lseP;
    let logQ = q[qBase + c] - lseQ;
    let probP = exp(logP);
    dp[params.offset4 + row * params.vocab + c] = g * probP * (logP - logQ - total);
    dq[params.offset5 + row * params.vocab + c] = g * (exp(logQ) - probP);
  }
}
`;

/** Dispatches `kernel` once per row chunk, one workgroup per row, operands in binding order. */
function dispatchRows(
  rt: WebGpuRuntime, kernel: Kernel, rows: number, vocab: number, operands: readonly RowChunkOperand[],
): void {
  for (const chunk of rt.rowChunks(rows, operands)) {
    const [offset1 = 0, offset2 = 0, offset3 = 0, offset4 = 0, offset5 = 0] = chunk.offsets;
    rt.dispatch(kernel, lossParams.pack({ rows: chunk.rows, vocab, offset1, offset2, offset3, offset4, offset5 }), chunk.bindings, chunk.rows);
  }
}

const row = (storage: Storage, rowStride: number): RowChunkOperand => ({ storage: asWebGpuStorage(storage), rowStride });

export function crossEntropy(
  rt: WebGpuRuntime, logits: Storage, targets: Storage, mask: Storage, rows: number, vocab: number,
): WebGpuStorage {
  const loss = rt.allocate('f32', rows);
  const kernel = rt.kernel('crossEntropy', () => ({ code: CROSS_ENTROPY_SOURCE, bindings: ['read', 'read', 'read', 'write'] }));
  dispatchRows(rt, kernel, rows, vocab, [row(logits, vocab), row(targets, 1), row(mask, 1), row(loss, 1)]);
  return loss;
}

export function crossEntropyBackward(
  rt: WebGpuRuntime, logits: Storage, targets: Storage, dRow: Storage, rows: number, vocab: number,
): WebGpuStorage {
  const dlogits = rt.allocate('f32', rows * vocab);
  const kernel = rt.kernel('crossEntropyBackward', () => ({
    code: CROSS_ENTROPY_BACKWARD_SOURCE, bindings: ['read', 'read', 'read', 'write'],
  }));
  dispatchRows(rt, kernel, rows, vocab, [row(logits, vocab), row(targets, 1), row(dRow, 1), row(dlogits, vocab)]);
  return dlogits;
}

export function klDiv(rt: WebGpuRuntime, p: Storage, q: Storage, rows: number, vocab: number): WebGpuStorage {
  const kl = rt.allocate('f32', rows);
  const kernel = rt.kernel('klDiv', () => ({ code: KL_SOURCE, bindings: ['read', 'read', 'write'] }));
  dispatchRows(rt, kernel, rows, vocab, [row(p, vocab), row(q, vocab), row(kl, 1)]);
  return kl;
}

export function klDivBackward(
  rt: WebGpuRuntime, p: Storage, q: Storage, dRow: Storage, rows: number, vocab: number,
): { dp: WebGpuStorage; dq: WebGpuStorage } {
  const dp = rt.allocate('f32', rows * vocab);
  const dq = rt.allocate('f32', rows * vocab);
  const kernel = rt.kernel('klDivBackward', () => ({
    code: KL_BACKWARD_SOURCE, bindings: ['read', 'read', 'read', 'write', 'write'],
  }));
  dispatchRows(rt, kernel, rows, vocab, [row(p, vocab), row(q, vocab), row(dRow, 1), row(dp, vocab), row(dq, vocab)]);
  return { dp, dq };
}
