import type { DType, Storage, View } from '../backend.ts';
import { f32ToBf16, f32ToF16 } from '../dtype.ts';
import { CpuStorage, allocateArray, cpuStorage, elementReader, isContiguousView, readF32, stridedIndices, writeInPlace } from './storage.ts';

// copy: any strided view [...shape] of any dtype -> contiguous [...shape] of `dtype`.
export function copy(x: View, dtype: DType): Storage {
  const source = cpuStorage(x.storage, 'copy');
  if (source.dtype === dtype && isContiguousView(x)) {
    // A contiguous run of the same dtype: one memcpy.
    const numel = x.shape.reduce((a, b) => a * b, 1);
    return new CpuStorage(dtype, source.data.slice(x.offset, x.offset + numel));
  }
  if (source.dtype !== 'i32' && dtype === 'f32') {
    const packed = readF32(x, 'copy'); // row-wise gather, a window on an f32 source, or halves widened
    return new CpuStorage('f32', packed.buffer === source.data.buffer ? packed.slice() : packed);
  }
  const indices = stridedIndices(x);
  const out = allocateArray(dtype, indices.length);
  const data = source.data;
  if (source.dtype === dtype) {
    // Same dtype: move bits.
    for (let i = 0; i < indices.length; i++) out[i] = data[indices[i]!]!;
    return new CpuStorage(dtype, out);
  }
  // Different dtypes: convert values (ints are truncated toward zero, as a cast does).
  const read = source.dtype === 'i32' ? (i: number) => data[i]! : elementReader(source, 'copy');
  const convert = dtype === 'bf16' ? f32ToBf16 : dtype === 'f16' ? f32ToF16 : dtype === 'i32' ? Math.trunc : (v: number) => v;
  for (let i = 0; i < indices.length; i++) out[i] = convert(read(indices[i]!));
  return new CpuStorage(dtype, out);
}

// assign: dst[...shape] (strided, in place) = src[...shape] (strided).
export function assign(dst: View, src: View): void {
  const target = writeInPlace(dst.storage, 'assign');
  if (target.dtype === 'f16' || target.dtype === 'bf16') {
    throw new Error(`assign: destination must be f32 or i32, got ${target.dtype}`);
  }
  const source = cpuStorage(src.storage, 'assign');
  if (source !== target && source.dtype === target.dtype && isContiguousView(dst) && isContiguousView(src)) {
    // Both contiguous runs of one dtype in different storages (a KV-cache append): one memcpy.
    const numel = dst.shape.reduce((a, b) => a * b, 1);
    target.data.set(source.data.subarray(src.offset, src.offset + numel), dst.offset);
    return;
  }
  const dstIndices = stridedIndices(dst);
  const srcIndices = stridedIndices(src);
  const read = source.dtype === 'i32' ? (i: number) => source.data[i]! : elementReader(source, 'assign');
  // Read everything before writing, so that a source overlapping the destination is seen as it was.
  const values = source === target ? Float64Array.from(srcIndices, read) : null;
  for (let i = 0; i < dstIndices.length; i++) target.data[dstIndices[i]!] = values ? values[i]! : read(srcIndices[i]!);
}
