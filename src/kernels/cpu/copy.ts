import type { DType, Storage, View } from '../backend.ts';
import { f32ToBf16, f32ToF16 } from '../../tensor/dtype.ts';
import { CpuStorage, allocateArray, cpuStorage, elementReader, stridedIndices } from './storage.ts';

// copy: any strided view [...shape] of any dtype -> contiguous [...shape] of `dtype`.
export function copy(x: View, dtype: DType): Storage {
  const source = cpuStorage(x.storage, 'copy');
  const indices = stridedIndices(x);
  const out = allocateArray(dtype, indices.length);
  const sameKind = source.dtype === dtype;
  if (sameKind || (source.dtype === 'i32') !== (dtype === 'i32')) {
    // Same dtype: move bits. i32 <-> float: numeric conversion.
    const data = source.data;
    for (let i = 0; i < indices.length; i++) out[i] = data[indices[i]!]!;
    if (!sameKind && dtype === 'i32') for (let i = 0; i < out.length; i++) out[i] = Math.trunc(out[i]!);
    return new CpuStorage(dtype, out);
  }
  const read = elementReader(source, 'copy');
  const convert = dtype === 'bf16' ? f32ToBf16 : dtype === 'f16' ? f32ToF16 : (v: number) => v;
  for (let i = 0; i < indices.length; i++) out[i] = convert(read(indices[i]!));
  return new CpuStorage(dtype, out);
}

// assign: dst[...shape] (strided, in place) = src[...shape] (strided).
export function assign(dst: View, src: View): void {
  const target = cpuStorage(dst.storage, 'assign');
  if (target.dtype === 'f16' || target.dtype === 'bf16') {
    throw new Error(`assign: destination must be f32 or i32, got ${target.dtype}`);
  }
  const dstIndices = stridedIndices(dst);
  const srcIndices = stridedIndices(src);
  const read = cpuStorage(src.storage, 'assign').dtype === 'i32'
    ? (i: number) => (src.storage as CpuStorage).data[i]!
    : elementReader(src.storage, 'assign');
  for (let i = 0; i < dstIndices.length; i++) target.data[dstIndices[i]!] = read(srcIndices[i]!);
}
