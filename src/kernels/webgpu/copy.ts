// Layout kernels: copy (strided gather + dtype cast into a fresh contiguous storage) and assign (strided
// scatter in place). Both run on the strided map (strided.ts); same-dtype moves copy raw bits.

import { BYTES_PER_ELEMENT, type DType, type View } from '../backend.ts';
import { asWebGpuStorage, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { PairSplitError, runStridedMap } from './strided.ts';
import { contiguousStrides, isContiguous, product } from './views.ts';

// x: any strided view [...shape] of any dtype -> out [...shape] contiguous `dtype`
export function copyView(rt: WebGpuRuntime, x: View, dtype: DType): WebGpuStorage {
  const source = asWebGpuStorage(x.storage);
  const sameDtype = source.dtype === dtype;
  const numel = product(x.shape);
  const bpe = BYTES_PER_ELEMENT[dtype];
  // A contiguous same-dtype range is a buffer copy (segment by segment): no shader, no binding limit.
  if (sameDtype && numel > 0 && isContiguous(x.shape, x.strides) && (x.offset * bpe) % 4 === 0) {
    if (source.freed) throw new Error(`copy of a freed ${source.dtype}[${source.numel}] storage`);
    const out = rt.allocate(dtype, numel);
    rt.copyBytes(source, x.offset * bpe, out, 0, out.byteSize);
    return out;
  }
  try {
    return runStridedMap(rt, {
      name: 'copy', shape: x.shape, inputs: [{ view: x, raw: sameDtype }], outDtype: dtype, outRaw: sameDtype,
      body: ([value]) => value!,
    })!;
  } catch (error) {
    if (!(error instanceof PairSplitError)) throw error;
    const wide = copyView(rt, x, 'f32');
    try {
      return copyView(rt, { storage: wide, shape: x.shape, strides: contiguousStrides(x.shape), offset: 0 }, dtype);
    } finally {
      rt.free(wide);
    }
  }
}

// dst: strided f32/i32 view [...shape] (written in place) <- src: strided view [...shape]
export function assign(rt: WebGpuRuntime, dst: View, src: View): void {
  const target = asWebGpuStorage(dst.storage);
  if (target.dtype !== 'f32' && target.dtype !== 'i32') throw new Error(`assign: dst must be f32 or i32, got ${target.dtype}`);
  if (dst.shape.length !== src.shape.length || dst.shape.some((size, i) => size !== src.shape[i])) {
    throw new Error(`assign: shapes differ, dst [${dst.shape}] vs src [${src.shape}]`);
  }
  // One buffer cannot be bound read-only and writable in one dispatch, and overlapping views would race:
  // gather the source first.
  if (src.storage === dst.storage) {
    const gathered = copyView(rt, src, asWebGpuStorage(src.storage).dtype);
    try {
      assign(rt, dst, { storage: gathered, shape: src.shape, strides: contiguousStrides(src.shape), offset: 0 });
    } finally {
      rt.free(gathered);
    }
    return;
  }
  const sameDtype = asWebGpuStorage(src.storage).dtype === target.dtype;
  runStridedMap(rt, {
    name: 'assign', shape: dst.shape, inputs: [{ view: src, raw: sameDtype }], outDtype: target.dtype,
    outRaw: sameDtype, outView: dst, body: ([value]) => value!,
  });
}
