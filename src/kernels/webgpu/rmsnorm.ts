// rmsNorm: x [R, H] f32, weight [H] (f32/f16/bf16) -> y [R, H] = w * (x * rstd), rstd [R] = rsqrt(mean(x^2) + eps)
// rmsNormBackward: dy, x [R, H], weight [H], rstd [R] -> dx [R, H], dweight [H]
//   xhat = x * rstd;  dx = rstd * (g - xhat * mean(g * xhat)) with g = dy * w;  dweight = sum_r dy * xhat.
// Rows: one workgroup each. dweight: threads own (row segment, column) and write partials [segments, H],
// summed in a fixed order by reduce (deterministic, no atomics).

import type { DType, Storage } from '../backend.ts';
import { full } from './memory.ts';
import { reduce } from './reduce.ts';
import { asWebGpuStorage, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { ENTRY_ARGS, PRELUDE, loadFn, params, storageDecl, workgroupReductions } from './wgsl.ts';

const WORKGROUP = 256;
const ROWS_PER_SEGMENT = 64;

const forwardParams = params({ rows: 'u32', hidden: 'u32', eps: 'f32', xOffset: 'u32', yOffset: 'u32', rstdOffset: 'u32' });

function forwardSource(weightDtype: DType): string {
  return PRELUDE + forwardParams.wgsl() + storageDecl(1, 'x', 'f32', 'read') + storageDecl(2, 'w', weightDtype, 'read')
    + storageDecl(3, 'y', 'f32', 'write') + storageDecl(4, 'rstd', 'f32', 'write') + loadFn('w', weightDtype)
    + workgroupReductions(WORKGROUP) + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let row = workgroup_index(wg, groups);
  if (row >= params.rows) { return; }
  let base = params.xOffset + row * params.hidden;
  var squares = 0.0;
  for (var h = lid; h < params.hidden; h = h + ${WORKGROUP}u) {
    let value = x[base + h];
    squares = squares + value * value;
  }
  let scale = 1.0 / sqrt(workgroup_sum(lid, squares) / f32(params.hidden) + params.eps);
  if (lid == 0u) { rstd[params.rstdOffset + row] = scale; }
  for (var h = lid; h < params.hidden; h = h + ${WORKGROUP}u) {
    y[params.yOffset + row * params.hidden + h] = load_w(h) * (x[base + h] * scale);
  }
}
`;
}

const backwardParams = params({
  rows: 'u32', hidden: 'u32', dyOffset: 'u32', xOffset: 'u32', rstdOffset: 'u32', dxOffset: 'u32',
  rowsPerSegment: 'u32', partialOffset: 'u32',
});

// dy, x [R, H], w [H], rstd [R] -> dx [R, H]
function backwardSource(weightDtype: DType): string {
  return PRELUDE + backwardParams.wgsl() + storageDecl(1, 'dy', 'f32', 'read') + storageDecl(2, 'x', 'f32', 'read')
    + storageDecl(3, 'w', weightDtype, 'read') + storageDecl(4, 'rstd', 'f32', 'read') + storageDecl(5, 'dx', 'f32', 'write')
    + loadFn('w', weightDtype) + workgroupReductions(WORKGROUP) + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let row = workgroup_index(wg, groups);
  if (row >= params.rows) { return; }
  let scale = rstd[params.rstdOffset + row];
  let xBase = params.xOffset + row * params.hidden;
  let dyBase = params.dyOffset + row * params.hidden;
  var partial = 0.0;
  for (var h = lid; h < params.hidden; h = h + ${WORKGROUP}u) {
    partial = partial + dy[dyBase + h] * load_w(h) * (x[xBase + h] * scale);
  }
  let mean = workgroup_sum(lid, partial) / f32(params.hidden);
  for (var h = lid; h < params.hidden; h = h + ${WORKGROUP}u) {
    let xhat = x[xBase + h] * scale;
    dx[params.dxOffset + row * params.hidden + h] = scale * (dy[dyBase + h] * load_w(h) - xhat * mean);
  }
}
`;
}

// dy, x [R, H], rstd [R] -> partial [segments, H]: partial[s, h] = sum over the segment's rows of dy * x * rstd
const WEIGHT_GRAD_SOURCE = PRELUDE + backwardParams.wgsl() + storageDecl(1, 'dy', 'f32', 'read') + storageDecl(2, 'x', 'f32', 'read')
  + storageDecl(3, 'rstd', 'f32', 'read') + storageDecl(4, 'partial', 'f32', 'write') + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let thread = workgroup_index(wg, groups) * ${WORKGROUP}u + lid;
  let segments = (params.rows + params.rowsPerSegment - 1u) / params.rowsPerSegment;
  if (thread >= segments * params.hidden) { return; }
  let segment = thread / params.hidden;
  let h = thread % params.hidden;
  let first = segment * params.rowsPerSegment;
  let last = min(first + params.rowsPerSegment, params.rows);
  var acc = 0.0;
  for (var r = first; r < last; r = r + 1u) {
    acc = acc + dy[params.dyOffset + r * params.hidden + h] * (x[params.xOffset + r * params.hidden + h] * rstd[params.rstdOffset + r]);
  }
  partial[params.partialOffset + segment * params.hidden + h] = acc;
}
`;

export function rmsNorm(
  rt: WebGpuRuntime, xStorage: Storage, weight: Storage, rows: number, hidden: number, eps: number,
): { y: WebGpuStorage; rstd: WebGpuStorage } {
  const x = asWebGpuStorage(xStorage);
  const w = asWebGpuStorage(weight);
  const y = rt.allocate('f32', rows * hidden);
  const rstd = rt.allocate('f32', rows);
  const kernel = rt.kernel(`rmsNorm.${w.dtype}`, () => ({ code: forwardSource(w.dtype), bindings: ['read', 'read', 'write', 'write'] }));
  const operands = [
    { storage: x, rowStride: hidden }, { storage: w, rowStride: 0, rowLength: hidden },
    { storage: y, rowStride: hidden }, { storage: rstd, rowStride: 1 },
  ];
  for (const chunk of rt.rowChunks(rows, operands)) {
    const [xOffset, , yOffset, rstdOffset] = chunk.offsets as [number, number, number, number];
    rt.dispatch(kernel, forwardParams.pack({ rows: chunk.rows, hidden, eps, xOffset, yOffset, rstdOffset }), chunk.bindings, chunk.rows);
  }
  return { y, rstd };
}

export function rmsNormBackward(
  rt: WebGpuRuntime, dyStorage: Storage, xStorage: Storage, weight: Storage, rstdStorage: Storage, rows: number, hidden: number,
): { dx: WebGpuStorage; dweight: WebGpuStorage } {
  const dy = asWebGpuStorage(dyStorage);
  const x = asWebGpuStorage(xStorage);
  const w = asWebGpuStorage(weight);
  const rstd = asWebGpuStorage(rstdStorage);
  const dx = rt.allocate('f32', rows * hidden);
  const dxKernel = rt.kernel(`rmsNormBackward.${w.dtype}`, () => ({
    code: backwardSource(w.dtype), bindings: ['read', 'read', 'read', 'read', 'write'],
  }));
  const dxOperands = [
    { storage: dy, rowStride: hidden }, { storage: x, rowStride: hidden }, { storage: w, rowStride: 0, rowLength: hidden },
    { storage: rstd, rowStride: 1 }, { storage: dx, rowStride: hidden },
  ];
  for (const chunk of rt.rowChunks(rows, dxOperands)) {
    const [dyOffset, xOffset, , rstdOffset, dxOffset] = chunk.offsets as number[] as [number, number, number, number, number];
    const packed = backwardParams.pack({
      rows: chunk.rows, hidden, dyOffset, xOffset, rstdOffset, dxOffset, rowsPerSegment: 0, partialOffset: 0,
    });
    rt.dispatch(dxKernel, packed, chunk.bindings, chunk.rows);
  }

  // dweight: partial sums per (segment of rows, column), then one fixed-order reduction over segments.
  const weightKernel = rt.kernel('rmsNormBackward.dweight', () => ({
    code: WEIGHT_GRAD_SOURCE, bindings: ['read', 'read', 'read', 'write'],
  }));
  const dwOperands = [{ storage: dy, rowStride: hidden }, { storage: x, rowStride: hidden }, { storage: rstd, rowStride: 1 }];
  const chunks = rt.rowChunks(rows, dwOperands);
  const segmentsOf = (chunkRows: number) => Math.ceil(chunkRows / ROWS_PER_SEGMENT);
  const segments = chunks.reduce((total, chunk) => total + segmentsOf(chunk.rows), 0);
  if (segments === 0) return { dx, dweight: full(rt, hidden, 0, 'f32') };
  const partial = rt.allocate('f32', segments * hidden);
  let segmentOffset = 0;
  for (const chunk of chunks) {
    const [dyOffset, xOffset, rstdOffset] = chunk.offsets as [number, number, number];
    const partialBound = rt.bindRange(partial, segmentOffset * hidden, (segmentOffset + segmentsOf(chunk.rows)) * hidden);
    const packed = backwardParams.pack({
      rows: chunk.rows, hidden, dyOffset, xOffset, rstdOffset, dxOffset: 0, rowsPerSegment: ROWS_PER_SEGMENT,
      partialOffset: segmentOffset * hidden - partialBound.base,
    });
    rt.dispatch(weightKernel, packed, [...chunk.bindings, partialBound.binding], Math.ceil((segmentsOf(chunk.rows) * hidden) / WORKGROUP));
    segmentOffset += segmentsOf(chunk.rows);
  }
  if (segments === 1) return { dx, dweight: partial };
  const dweight = reduce(rt, 'sum', partial, 1, segments, hidden);
  rt.free(partial);
  return { dx, dweight };
}
