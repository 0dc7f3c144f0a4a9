// reduce: x [outer, size, inner] f32 contiguous -> out [outer, inner], sum or max (NaN propagates).
// Two shapes of kernel:
//  - workgroup per output (inner == 1, or few outputs over a long axis): 256 threads stride over `size`
//    and combine with a tree in workgroup memory;
//  - thread per output (many outputs): each thread walks `size` with stride `inner`, coalesced across threads.
// An outer slice larger than the binding limit is reduced in size-chunks into partials [outer, chunks, inner]
// which are then reduced again.

import type { ReduceOp, Storage } from '../backend.ts';
import { full } from './memory.ts';
import { asWebGpuStorage, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { ENTRY_ARGS, PRELUDE, params, storageDecl, workgroupReductions } from './wgsl.ts';

const WORKGROUP = 256;

const reduceParams = params({ outer: 'u32', size: 'u32', inner: 'u32', xOffset: 'u32', outOffset: 'u32' });

function combine(op: ReduceOp, acc: string, value: string): string {
  return op === 'sum' ? `${acc} = ${acc} + ${value};` : `if (${value} > ${acc} || ${value} != ${value}) { ${acc} = ${value}; }`;
}

function identity(op: ReduceOp): string {
  return op === 'sum' ? '0.0' : 'neg_inf()';
}

// one workgroup per output (o, i): out[o, i] = reduce_s x[o, s, i]
function workgroupPerOutputSource(op: ReduceOp): string {
  return PRELUDE + reduceParams.wgsl() + storageDecl(1, 'x', 'f32', 'read') + storageDecl(2, 'out', 'f32', 'write')
    + workgroupReductions(WORKGROUP) + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let output = workgroup_index(wg, groups);
  if (output >= params.outer * params.inner) { return; }
  let o = output / params.inner;
  let i = output % params.inner;
  let base = params.xOffset + o * params.size * params.inner + i;
  var acc = ${identity(op)};
  for (var s = lid; s < params.size; s = s + ${WORKGROUP}u) {
    let value = x[base + s * params.inner];
    ${combine(op, 'acc', 'value')}
  }
  let total = workgroup_${op}(lid, acc);
  if (lid == 0u) { out[params.outOffset + output] = total; }
}
`;
}

// one thread per output (o, i): out[o, i] = reduce_s x[o, s, i]
function threadPerOutputSource(op: ReduceOp): string {
  return PRELUDE + reduceParams.wgsl() + storageDecl(1, 'x', 'f32', 'read') + storageDecl(2, 'out', 'f32', 'write') + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let output = workgroup_index(wg, groups) * ${WORKGROUP}u + lid;
  if (output >= params.outer * params.inner) { return; }
  let o = output / params.inner;
  let i = output % params.inner;
  let base = params.xOffset + o * params.size * params.inner + i;
  var acc = ${identity(op)};
  for (var s = 0u; s < params.size; s = s + 1u) {
    let value = x[base + s * params.inner];
    ${combine(op, 'acc', 'value')}
  }
  out[params.outOffset + output] = acc;
}
`;
}

/** Reduces contiguous [outer, size, inner] at element `xStart` of x into out at `outStart`; everything fits one binding. */
function dispatchReduce(
  rt: WebGpuRuntime, op: ReduceOp, x: WebGpuStorage, xStart: number, out: WebGpuStorage, outStart: number,
  outer: number, size: number, inner: number,
): void {
  const outputs = outer * inner;
  const perOutput = inner === 1 || (outputs <= 2048 && size >= 256);
  const kernel = perOutput
    ? rt.kernel(`reduce.${op}.workgroup`, () => ({ code: workgroupPerOutputSource(op), bindings: ['read', 'write'] }))
    : rt.kernel(`reduce.${op}.thread`, () => ({ code: threadPerOutputSource(op), bindings: ['read', 'write'] }));
  const xBound = rt.bindRange(x, xStart, xStart + outer * size * inner);
  const outBound = rt.bindRange(out, outStart, outStart + outputs);
  const packed = reduceParams.pack({
    outer, size, inner, xOffset: xStart - xBound.base, outOffset: outStart - outBound.base,
  });
  rt.dispatch(kernel, packed, [xBound.binding, outBound.binding], perOutput ? outputs : Math.ceil(outputs / WORKGROUP));
}

export function reduce(rt: WebGpuRuntime, op: ReduceOp, xStorage: Storage, outer: number, size: number, inner: number): WebGpuStorage {
  const x = asWebGpuStorage(xStorage);
  const out = rt.allocate('f32', outer * inner);
  if (outer * inner === 0) return out;
  if (size === 0) {
    rt.free(out);
    return full(rt, outer * inner, op === 'sum' ? 0 : -Infinity, 'f32');
  }
  const sliceElements = size * inner;
  const sliceFits = x.byteSize <= rt.maxBindingBytes || sliceElements * 4 + rt.offsetAlignment + 4 <= rt.maxBindingBytes;
  if (sliceFits) {
    // Chunks of whole outer slices.
    for (const chunk of rt.rowChunks(outer, [{ storage: x, rowStride: sliceElements }, { storage: out, rowStride: inner }])) {
      dispatchReduce(rt, op, x, chunk.row0 * sliceElements, out, chunk.row0 * inner, chunk.rows, size, inner);
    }
    return out;
  }
  // One slice is too large: reduce size-chunks of each slice into partials, then reduce the partials.
  const bytesPerStep = inner * 4;
  const stepsPerChunk = Math.max(1, Math.floor((rt.maxBindingBytes - rt.offsetAlignment - 4) / bytesPerStep));
  if (stepsPerChunk * bytesPerStep > rt.maxBindingBytes) {
    throw new Error(`reduce: one step of ${bytesPerStep} bytes exceeds the binding limit`);
  }
  const chunks = Math.ceil(size / stepsPerChunk);
  const partials = rt.allocate('f32', outer * chunks * inner);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < chunks; c++) {
      const steps = Math.min(stepsPerChunk, size - c * stepsPerChunk);
      dispatchReduce(rt, op, x, o * sliceElements + c * stepsPerChunk * inner, partials, (o * chunks + c) * inner, 1, steps, inner);
    }
  }
  rt.free(out);
  const result = reduce(rt, op, partials, outer, chunks, inner);
  rt.free(partials);
  return result;
}
