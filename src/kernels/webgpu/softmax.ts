// softmax / log-softmax over the last axis and their backward; one workgroup of 256 threads per row, so
// long rows (V = 151936) stream through each thread's registers: a running (max, sum) pass, then a write pass.

import type { Storage } from '../backend.ts';
import { asWebGpuStorage, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { ENTRY_ARGS, PRELUDE, params, storageDecl, workgroupReductions } from './wgsl.ts';

/** Threads per row in every row kernel of this file and loss.ts. */
export const WORKGROUP = 256;

const rowParams = params({ rows: 'u32', cols: 'u32', xOffset: 'u32', yOffset: 'u32', dyOffset: 'u32' });

/**
 * WGSL `fnName(lid, base, cols)` = log(sum_c exp(x[base + c])) over one row, where x[e] is `load(e)`;
 * numerically safe (each thread keeps a running max and a sum scaled to it, then the workgroup rescales).
 * Rows of -inf give -inf; NaN propagates. Needs workgroup_max/workgroup_sum; call from uniform control flow.
 */
export function rowLogSumExp(fnName: string, load: (element: string) => string): string {
  return /* wgsl */ `
fn ${fnName}(lid: u32, base: u32, cols: u32) -> f32 {
  var running_max = neg_inf();
  var running_sum = 0.0;
  for (var c = lid; c < cols; c = c + ${WORKGROUP}u) {
    let value = ${load('base + c')};
    if (value > running_max) {
      running_sum = running_sum * exp(running_max - value) + 1.0;
      running_max = value;
    } else if (running_max != neg_inf() || value != value) {
      running_sum = running_sum + exp(value - running_max);
    }
  }
  let row_max = workgroup_max(lid, running_max);
  var rescaled = 0.0;
  if (running_max != neg_inf()) { rescaled = running_sum * exp(running_max - row_max); }
  let row_sum = workgroup_sum(lid, rescaled);
  return row_max + log(row_sum);
}
`;
}

// x [R, C] -> y [R, C]: softmax (exp(x - lse)) or log-softmax (x - lse)
function forwardSource(log: boolean): string {
  return PRELUDE + rowParams.wgsl() + storageDecl(1, 'x', 'f32', 'read') + storageDecl(2, 'y', 'f32', 'write')
    + workgroupReductions(WORKGROUP) + rowLogSumExp('row_log_sum_exp', (e) => `x[${e}]`) + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let row = workgroup_index(wg, groups);
  if (row >= params.rows) { return; }
  let lse = row_log_sum_exp(lid, params.xOffset + row * params.cols, params.cols);
  for (var c = lid; c < params.cols; c = c + ${WORKGROUP}u) {
    let value = x[params.xOffset + row * params.cols + c];
    y[params.yOffset + row * params.cols + c] = ${log ? 'value - lse' : 'exp(value - lse)'};
  }
}
`;
}

// y, dy [R, C] -> dx [R, C]: softmax dx = y (dy - sum(dy y)); log-softmax dx = dy - exp(y) sum(dy)
function backwardSource(log: boolean): string {
  return PRELUDE + rowParams.wgsl() + storageDecl(1, 'y', 'f32', 'read') + storageDecl(2, 'dy', 'f32', 'read')
    + storageDecl(3, 'dx', 'f32', 'write') + workgroupReductions(WORKGROUP) + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let row = workgroup_index(wg, groups);
  if (row >= params.rows) { return; }
  let yBase = params.yOffset + row * params.cols;
  let dyBase = params.dyOffset + row * params.cols;
  var partial = 0.0;
  for (var c = lid; c < params.cols; c = c + ${WORKGROUP}u) {
    partial = partial + ${log ? 'dy[dyBase + c]' : 'dy[dyBase + c] * y[yBase + c]'};
  }
  let total = workgroup_sum(lid, partial);
  for (var c = lid; c < params.cols; c = c + ${WORKGROUP}u) {
    let g = dy[dyBase + c];
    let out = y[yBase + c];
    dx[params.xOffset + row * params.cols + c] = ${log ? 'g - exp(out) * total' : 'out * (g - total)'};
  }
}
`;
}

export function softmax(rt: WebGpuRuntime, xStorage: Storage, rows: number, cols: number, log: boolean): WebGpuStorage {
  const x = asWebGpuStorage(xStorage);
  const y = rt.allocate('f32', rows * cols);
  const kernel = rt.kernel(`softmax.${log ? 'log' : 'exp'}`, () => ({ code: forwardSource(log), bindings: ['read', 'write'] }));
  for (const chunk of rt.rowChunks(rows, [{ storage: x, rowStride: cols }, { storage: y, rowStride: cols }])) {
    const [xOffset, yOffset] = chunk.offsets as [number, number];
    rt.dispatch(kernel, rowParams.pack({ rows: chunk.rows, cols, xOffset, yOffset, dyOffset: 0 }), chunk.bindings, chunk.rows);
  }
  return y;
}

export function softmaxBackward(
  rt: WebGpuRuntime, yStorage: Storage, dyStorage: Storage, rows: number, cols: number, log: boolean,
): WebGpuStorage {
  const y = asWebGpuStorage(yStorage);
  const dy = asWebGpuStorage(dyStorage);
  const dx = rt.allocate('f32', rows * cols);
  const kernel = rt.kernel(`softmaxBackward.${log ? 'log' : 'exp'}`, () => ({
    code: backwardSource(log), bindings: ['read', 'read', 'write'],
  }));
  const operands = [{ storage: y, rowStride: cols }, { storage: dy, rowStride: cols }, { storage: dx, rowStride: cols }];
  for (const chunk of rt.rowChunks(rows, operands)) {
    const [yOffset, dyOffset, xOffset] = chunk.offsets as [number, number, number];
    rt.dispatch(kernel, rowParams.pack({ rows: chunk.rows, cols, xOffset, yOffset, dyOffset }), chunk.bindings, chunk.rows);
  }
  return dx;
}
