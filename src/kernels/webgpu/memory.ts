// Moving data in and out: upload, full (a fill kernel), read (any strided view) and readRaw.

import { BYTES_PER_ELEMENT, type DType, type Storage, type View } from '../backend.ts';
import { f32ToBf16, f32ToF16, widenToF32 } from '../dtype.ts';
import { copyView } from './copy.ts';
import { asWebGpuStorage, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { runStridedMap } from './strided.ts';
import { isContiguous, product } from './views.ts';

const EXPECTED_ARRAY = { f32: Float32Array, i32: Int32Array, f16: Uint16Array, bf16: Uint16Array } as const;

export function upload(rt: WebGpuRuntime, data: Float32Array | Uint16Array | Int32Array, dtype: DType): WebGpuStorage {
  if (!(data instanceof EXPECTED_ARRAY[dtype])) {
    throw new Error(`upload: ${dtype} data must be a ${EXPECTED_ARRAY[dtype].name}, got a ${data.constructor.name}`);
  }
  const storage = rt.allocate(dtype, data.length, false);
  let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (bytes.byteLength % 4 !== 0) { // an odd count of halves: writeBuffer moves whole words
    const padded = new Uint8Array(bytes.byteLength + 2);
    padded.set(bytes);
    bytes = padded;
  }
  let at = 0;
  for (const span of rt.spans(storage, 0, bytes.byteLength)) {
    rt.queue.writeBuffer(span.buffer, span.offset, bytes.buffer as ArrayBuffer, bytes.byteOffset + at, span.size);
    at += span.size;
  }
  return storage;
}

/** The raw bit pattern `value` is stored as in `dtype`. */
function bitsOf(value: number, dtype: DType): number {
  switch (dtype) {
    case 'f32': return new Uint32Array(new Float32Array([value]).buffer)[0]!;
    case 'i32': return value | 0;
    case 'f16': return f32ToF16(value);
    case 'bf16': return f32ToBf16(value);
  }
}

// out [numel] = value
export function full(rt: WebGpuRuntime, numel: number, value: number, dtype: DType): WebGpuStorage {
  const body = dtype === 'f32' ? 'bitcast<f32>(params.bits)' : dtype === 'i32' ? 'bitcast<i32>(params.bits)' : 'params.bits';
  return runStridedMap(rt, {
    name: 'fill', shape: [numel], inputs: [], outDtype: dtype, outRaw: true, body: () => body, bits: bitsOf(value, dtype),
  })!;
}

function typedFromBytes(bytes: ArrayBuffer, dtype: DType): Float32Array | Uint16Array | Int32Array {
  if (dtype === 'f32') return new Float32Array(bytes);
  if (dtype === 'i32') return new Int32Array(bytes);
  return new Uint16Array(bytes);
}

export async function readRaw(rt: WebGpuRuntime, storage: Storage): Promise<Float32Array | Uint16Array | Int32Array> {
  const s = asWebGpuStorage(storage);
  if (s.freed) throw new Error(`readRaw of a freed ${s.dtype}[${s.numel}] storage`);
  const bytes = await rt.readBytes(s, 0, s.numel * BYTES_PER_ELEMENT[s.dtype]);
  return typedFromBytes(bytes, s.dtype);
}

/** view's elements in row-major order, floats widened to f32. Strided views are gathered on the GPU first. */
export async function read(rt: WebGpuRuntime, view: View): Promise<Float32Array | Int32Array> {
  rt.check();
  const s = asWebGpuStorage(view.storage);
  if (s.freed) throw new Error(`read of a freed ${s.dtype}[${s.numel}] storage`);
  const bpe = BYTES_PER_ELEMENT[s.dtype];
  const numel = product(view.shape);
  if (numel === 0) return s.dtype === 'i32' ? new Int32Array(0) : new Float32Array(0);
  let bytes: ArrayBuffer;
  if (isContiguous(view.shape, view.strides) && (view.offset * bpe) % 4 === 0) {
    bytes = await rt.readBytes(s, view.offset * bpe, numel * bpe);
  } else {
    const gathered = copyView(rt, view, s.dtype);
    try {
      bytes = await rt.readBytes(gathered, 0, numel * bpe);
    } finally {
      rt.free(gathered);
    }
  }
  const raw = typedFromBytes(bytes, s.dtype);
  return raw instanceof Uint16Array ? widenToF32(raw, s.dtype as 'f16' | 'bf16') : raw;
}
