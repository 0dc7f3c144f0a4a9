import type { DType, Storage, View } from '../backend.ts';
import { bf16ToF32, f16ToF32, widenToF32 } from '../dtype.ts';

export type CpuArray = Float32Array | Uint16Array | Int32Array;

/** CPU storage: a typed array. f16/bf16 hold raw bits in a Uint16Array. */
export class CpuStorage implements Storage {
  readonly backend = 'cpu' as const;
  freed = false;
  /**
   * Bumped by every kernel that writes this storage in place (assign, adamwStep) through writeInPlace: what is
   * cached about a storage's contents (sparse.ts's mask selections) is valid only for the version it was read at.
   */
  version = 0;
  constructor(readonly dtype: DType, readonly data: CpuArray) {}
  get numel(): number {
    return this.data.length;
  }
}

export function allocateArray(dtype: DType, numel: number): CpuArray {
  if (dtype === 'f32') return new Float32Array(numel);
  if (dtype === 'i32') return new Int32Array(numel);
  return new Uint16Array(numel);
}

/** The storage `storage` as a kernel about to write it in place: its version is bumped (see CpuStorage.version). */
export function writeInPlace(storage: Storage, what: string): CpuStorage {
  const s = cpuStorage(storage, what);
  s.version++;
  return s;
}

export function cpuStorage(storage: Storage, what: string): CpuStorage {
  if (!(storage instanceof CpuStorage)) {
    throw new Error(`${what}: expected a cpu storage, got one from the ${storage.backend} backend`);
  }
  if (storage.freed) throw new Error(`${what}: storage was already freed (use after dispose)`);
  return storage;
}

/** The f32 array of a contiguous f32 storage. */
export function f32Of(storage: Storage, what: string): Float32Array {
  const s = cpuStorage(storage, what);
  if (!(s.data instanceof Float32Array)) throw new Error(`${what}: expected f32 storage, got ${s.dtype}`);
  return s.data;
}

export function i32Of(storage: Storage, what: string): Int32Array {
  const s = cpuStorage(storage, what);
  if (!(s.data instanceof Int32Array)) throw new Error(`${what}: expected i32 storage, got ${s.dtype}`);
  return s.data;
}

/** A reader that widens element i of any float storage to a number. */
export function elementReader(storage: Storage, what: string): (i: number) => number {
  const s = cpuStorage(storage, what);
  const data = s.data;
  if (s.dtype === 'bf16') return (i) => bf16ToF32(data[i]!);
  if (s.dtype === 'f16') return (i) => f16ToF32(data[i]!);
  return (i) => data[i]!;
}

/**
 * Flat storage index of every element of a strided view, in row-major order of its shape.
 * Incremental counters: one add per element instead of a div/mod chain.
 */
export function stridedIndices(view: View): Int32Array {
  const { shape, strides, offset } = view;
  const rank = shape.length;
  const numel = shape.reduce((a, b) => a * b, 1);
  const out = new Int32Array(numel);
  if (numel === 0) return out;
  const counter = new Array<number>(rank).fill(0);
  let index = offset;
  for (let i = 0; i < numel; i++) {
    out[i] = index;
    for (let d = rank - 1; d >= 0; d--) {
      counter[d]!++;
      index += strides[d]!;
      if (counter[d]! < shape[d]!) break;
      index -= strides[d]! * shape[d]!;
      counter[d] = 0;
    }
  }
  return out;
}

export function isContiguousView(view: View): boolean {
  let expected = 1;
  for (let d = view.shape.length - 1; d >= 0; d--) {
    if (view.shape[d] !== 1 && view.strides[d] !== expected) return false;
    expected *= view.shape[d]!;
  }
  return true;
}

/** The elements of a float view as a contiguous Float32Array (a subarray, without copying, when possible). */
export function readF32(view: View, what: string): Float32Array {
  const s = cpuStorage(view.storage, what);
  const numel = view.shape.reduce((a, b) => a * b, 1);
  if (s.data instanceof Float32Array && isContiguousView(view)) {
    return s.data.subarray(view.offset, view.offset + numel);
  }
  if (s.data instanceof Float32Array) return gatherF32(s.data, view, numel);
  if (s.data instanceof Uint16Array && isContiguousView(view)) {
    // A run of halves (a bf16 bias or norm weight): widened in one pass, no closure call per element.
    return widenToF32(s.data.subarray(view.offset, view.offset + numel), s.dtype as 'f16' | 'bf16');
  }
  const read = elementReader(s, what);
  const indices = stridedIndices(view);
  const out = new Float32Array(numel);
  for (let i = 0; i < numel; i++) out[i] = read(indices[i]!);
  return out;
}

/**
 * A strided f32 view packed in row-major order: the innermost axis is a plain loop and the outer axes step
 * by counters (no per-element closure or index array; transposed gradients are read this way).
 */
function gatherF32(data: Float32Array, view: View, numel: number): Float32Array {
  const out = new Float32Array(numel);
  if (numel === 0) return out;
  const { shape, strides } = view;
  const rank = shape.length;
  if (rank === 0) {
    out[0] = data[view.offset]!;
    return out;
  }
  const inner = shape[rank - 1]!;
  const innerStride = strides[rank - 1]!;
  const counter = new Array<number>(rank).fill(0);
  let index = view.offset;
  for (let at = 0; at < numel; at += inner) {
    for (let j = 0, from = index; j < inner; j++, from += innerStride) out[at + j] = data[from]!;
    for (let d = rank - 2; d >= 0; d--) {
      counter[d]!++;
      index += strides[d]!;
      if (counter[d]! < shape[d]!) break;
      index -= strides[d]! * shape[d]!;
      counter[d] = 0;
    }
  }
  return out;
}
