// safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
// N bytes of UTF-8 JSON { name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: {..} },
// then the data section; offsets are relative to its start.
//
// Every read is positioned (header first, then one tensor at a time), so loading a model holds at most one
// tensor on the host. The reader treats the file as hostile: every length, offset and shape is checked
// before anything is allocated, and every error names the file and, where there is one, the tensor.
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';

import type { DType } from '../kernels/backend.ts';
import { writeFileAtomic } from '../io/atomic.ts';

/** The dtypes rank1 reads. I64 is read only to narrow to i32 (token ids), with a range check. */
export type SafetensorsDType = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64';
/** The dtypes rank1 writes: its storage dtypes, and I64 for index tensors (offsets) other tools expect wide. */
export type WritableSafetensorsDType = SafetensorsDType;

export const SAFETENSORS_DTYPE_BYTES: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8 };
/** In the format spec but not supported here: named as such rather than as "unknown". */
const SPEC_DTYPES_UNSUPPORTED = new Set([
  'BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2', 'I16', 'U16', 'U32', 'F64', 'U64',
  'C64',
]);

/** Same limit as the reference implementation: a larger header is refused before it is allocated. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface SafetensorsEntry {
  name: string;
  /** The file the tensor lives in, for error messages and for `readTensorData(entry.file, entry)`. */
  file: string;
  dtype: SafetensorsDType;
  shape: number[];
  numel: number;
  /** [begin, end) relative to the data section, as written in the header. */
  dataOffsets: [number, number];
  /** Absolute position of the first byte in the file. */
  fileOffset: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  /** N: the JSON header's length in bytes (including any padding). */
  headerLength: number;
  /** 8 + N: where the data section starts. */
  dataStart: number;
  dataSize: number;
  /** In header order. */
  tensors: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

export type HostData = Float32Array | Uint16Array | Int32Array;

export interface TensorToWrite {
  name: string;
  dtype: WritableSafetensorsDType;
  shape: readonly number[];
  /**
   * F32: Float32Array, F16/BF16: raw bits as Uint16Array, I32: Int32Array, I64: BigInt64Array. A function is called when the
   * tensor's turn comes, so a caller streaming from a GPU holds one tensor on the host at a time.
   */
  data: HostData | BigInt64Array | (() => Promise<HostData | BigInt64Array>);
}

export function toSafetensorsDType(dtype: DType): Exclude<SafetensorsDType, 'I64'> {
  return ({ f32: 'F32', f16: 'F16', bf16: 'BF16', i32: 'I32' } as const)[dtype];
}

/** The storage dtype a tensor is loaded as: half stays half (never widened), I64 narrows to i32. */
export function fromSafetensorsDType(dtype: SafetensorsDType): DType {
  return ({ F32: 'f32', F16: 'f16', BF16: 'bf16', I32: 'i32', I64: 'i32' } as const)[dtype];
}

function assertLittleEndianHost(): void {
  // Typed arrays use host byte order; safetensors is little-endian. Every platform Node ships on is LE.
  if (endianness() !== 'LE') throw new Error('safetensors: big-endian hosts are not supported');
}

// ---- reading --------------------------------------------------------------------------------------------

/** Reads exactly `length` bytes at `position` into `target`, in chunks small enough for one read call. */
async function readExactly(
  handle: FileHandle, target: Uint8Array, position: number, file: string, what: string,
): Promise<void> {
  const chunk = 1 << 30;
  let done = 0;
  while (done < target.byteLength) {
    const want = Math.min(chunk, target.byteLength - done);
    const { bytesRead } = await handle.read(target, done, want, position + done);
    if (bytesRead === 0) {
      throw new Error(`${file}: unexpected end of file reading ${what} (${done} of ${target.byteLength} bytes at byte ${position})`);
    }
    done += bytesRead;
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function parseEntry(
  name: string, raw: unknown, file: string, dataStart: number, dataSize: number,
): SafetensorsEntry {
  const where = `tensor "${name}" in ${file}`;
  if (!isRecord(raw)) throw new Error(`safetensors: ${where}: header entry is not an object`);
  const { dtype, shape, data_offsets: offsets } = raw;
  if (typeof dtype !== 'string') throw new Error(`safetensors: ${where}: dtype is missing or not a string`);
  if (!(dtype in SAFETENSORS_DTYPE_BYTES)) {
    if (SPEC_DTYPES_UNSUPPORTED.has(dtype)) throw new Error(`safetensors: unsupported dtype ${dtype} for ${where}`);
    throw new Error(`safetensors: unknown dtype ${JSON.stringify(dtype.slice(0, 40))} for ${where}`);
  }
  const elementBytes = SAFETENSORS_DTYPE_BYTES[dtype as SafetensorsDType];
  if (!Array.isArray(shape)) throw new Error(`safetensors: ${where}: shape is missing or not an array`);
  if (shape.length > 64) throw new Error(`safetensors: ${where}: shape has ${shape.length} dimensions`);
  // The product is tracked against the data size at every step, so it can never overflow a double.
  let numel = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new Error(`safetensors: ${where}: shape ${JSON.stringify(shape).slice(0, 200)} is not a list of non-negative integers`);
    }
    numel *= d;
    if (numel * elementBytes > dataSize) {
      throw new Error(`safetensors: ${where}: shape ${JSON.stringify(shape).slice(0, 200)} needs more bytes than the data section's ${dataSize}`);
    }
  }
  if (!Array.isArray(offsets) || offsets.length !== 2) {
    throw new Error(`safetensors: ${where}: data_offsets is missing or not [begin, end]`);
  }
  const [begin, end] = offsets as unknown[];
  if (typeof begin !== 'number' || typeof end !== 'number' || !Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < 0) {
    throw new Error(`safetensors: ${where}: data_offsets ${JSON.stringify(offsets).slice(0, 100)} are not non-negative integers`);
  }
  if (begin > end) throw new Error(`safetensors: ${where}: data_offsets begin ${begin} > end ${end}`);
  if (end > dataSize) {
    throw new Error(`safetensors: ${where}: data_offsets end ${end} is past the data section (${dataSize} bytes)`);
  }
  const byteLength = numel * elementBytes;
  if (end - begin !== byteLength) {
    throw new Error(`safetensors: ${where}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${dtype} shape [${shape.join(', ')}] needs ${byteLength}`);
  }
  return {
    name, file, dtype: dtype as SafetensorsDType, shape: [...shape] as number[], numel,
    dataOffsets: [begin, end], fileOffset: dataStart + begin, byteLength,
  };
}

/**
 * Reads and validates the header of a safetensors file without reading its data. Besides per-entry checks,
 * the tensors must tile the data section exactly (no gap, no overlap, nothing left over), as the reference
 * implementation requires.
 */
export async function readSafetensorsHeader(file: string): Promise<SafetensorsHeader> {
  let handle: FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (err) {
    throw new Error(`safetensors: cannot open ${file}: ${(err as Error).message}`);
  }
  try {
    return await readHeaderFrom(handle, file);
  } finally {
    await handle.close();
  }
}

async function readHeaderFrom(handle: FileHandle, file: string): Promise<SafetensorsHeader> {
  const fileSize = (await handle.stat()).size;
  if (fileSize < 8) throw new Error(`safetensors: ${file} is ${fileSize} bytes, too short for the 8-byte header length`);
  const prefix = new Uint8Array(8);
  await readExactly(handle, prefix, 0, file, 'the header length');
  const headerLength = headerLengthOf(prefix, fileSize, file);
  const headerBytes = new Uint8Array(headerLength);
  await readExactly(handle, headerBytes, 8, file, 'the header');
  return parseHeaderBytes(headerBytes, file, fileSize);
}

/** The header length the first 8 bytes declare, checked against the file's size. */
function headerLengthOf(prefix: Uint8Array, fileSize: number, file: string): number {
  const declared = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (declared < 2n) throw new Error(`safetensors: ${file}: header length ${declared} is too small for a JSON object`);
  if (declared > BigInt(MAX_HEADER_BYTES)) {
    throw new Error(`safetensors: ${file}: header length ${declared} exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)`);
  }
  const headerLength = Number(declared);
  if (headerLength > fileSize - 8) {
    throw new Error(`safetensors: ${file}: header length ${headerLength} is past the end of the ${fileSize}-byte file (truncated?)`);
  }
  return headerLength;
}

/** The JSON header (the bytes after the 8-byte length), validated against a file of `fileSize` bytes. */
function parseHeaderBytes(headerBytes: Uint8Array, file: string, fileSize: number): SafetensorsHeader {
  const headerLength = headerBytes.byteLength;
  if (headerBytes[0] !== 0x7b) throw new Error(`safetensors: ${file}: header does not start with '{'`);

  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (err) {
    // TextDecoder and JSON.parse errors (including a RangeError from absurd nesting) become one message.
    throw new Error(`safetensors: ${file}: header is not valid UTF-8 JSON: ${(err as Error).message}`);
  }
  if (!isRecord(parsed)) throw new Error(`safetensors: ${file}: header is not a JSON object`);

  const dataStart = 8 + headerLength;
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(parsed)) {
    if (name === '__metadata__') {
      if (!isRecord(raw)) throw new Error(`safetensors: ${file}: __metadata__ is not an object`);
      metadata = Object.create(null) as Record<string, string>;
      for (const [key, value] of Object.entries(raw)) {
        if (typeof value !== 'string') {
          throw new Error(`safetensors: ${file}: __metadata__ value for "${key.slice(0, 100)}" is not a string`);
        }
        metadata[key] = value;
      }
      continue;
    }
    tensors.set(name, parseEntry(name, raw, file, dataStart, dataSize));
  }

  const byOffset = [...tensors.values()].sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let cursor = 0;
  let previous: SafetensorsEntry | null = null;
  for (const entry of byOffset) {
    const [begin, end] = entry.dataOffsets;
    if (begin < cursor) {
      throw new Error(`safetensors: ${file}: tensor "${entry.name}" [${begin}, ${end}] overlaps tensor "${previous!.name}" [${previous!.dataOffsets[0]}, ${previous!.dataOffsets[1]}]`);
    }
    if (begin > cursor) {
      throw new Error(`safetensors: ${file}: gap of ${begin - cursor} bytes before tensor "${entry.name}" at data offset ${cursor}`);
    }
    cursor = end;
    previous = entry;
  }
  if (cursor !== dataSize) {
    throw new Error(`safetensors: ${file}: tensors cover ${cursor} bytes but the data section holds ${dataSize} (truncated or trailing bytes)`);
  }
  return { file, fileSize, headerLength, dataStart, dataSize, tensors, metadata };
}

/**
 * A whole safetensors file already in memory (a browser's fetch, a test): its validated header, and each
 * tensor's data copied into a fresh (aligned) typed array, as readTensorData returns it.
 */
export function parseSafetensorsBuffer(bytes: Uint8Array, file: string): { header: SafetensorsHeader; read: (entry: SafetensorsEntry) => HostData } {
  assertLittleEndianHost();
  if (bytes.byteLength < 8) throw new Error(`safetensors: ${file} is ${bytes.byteLength} bytes, too short for the 8-byte header length`);
  const headerLength = headerLengthOf(bytes.subarray(0, 8), bytes.byteLength, file);
  const header = parseHeaderBytes(bytes.subarray(8, 8 + headerLength), file, bytes.byteLength);
  const read = (entry: SafetensorsEntry): HostData => {
    const raw = bytes.slice(entry.fileOffset, entry.fileOffset + entry.byteLength);
    return hostDataOf(entry, raw.buffer);
  };
  return { header, read };
}

/**
 * One tensor's data, read with a positioned read into a fresh (hence aligned) typed array: raw bits for
 * F16/BF16, I64 narrowed to Int32Array (throws if a value does not fit).
 */
export async function readTensorData(source: string | FileHandle, entry: SafetensorsEntry): Promise<HostData> {
  assertLittleEndianHost();
  if (typeof source === 'string') {
    let handle: FileHandle;
    try {
      handle = await fs.open(source, 'r');
    } catch (err) {
      throw new Error(`safetensors: cannot open ${source} to read tensor "${entry.name}": ${(err as Error).message}`);
    }
    try {
      return await readTensorData(handle, entry);
    } finally {
      await handle.close();
    }
  }
  const buffer = new ArrayBuffer(entry.byteLength);
  await readExactly(source, new Uint8Array(buffer), entry.fileOffset, entry.file, `tensor "${entry.name}"`);
  return hostDataOf(entry, buffer);
}

/** A tensor's raw little-endian bytes as its host array: raw bits for F16/BF16, I64 narrowed to i32. */
function hostDataOf(entry: SafetensorsEntry, buffer: ArrayBuffer): HostData {
  switch (entry.dtype) {
    case 'F32': return new Float32Array(buffer);
    case 'F16':
    case 'BF16': return new Uint16Array(buffer);
    case 'I32': return new Int32Array(buffer);
    case 'I64': {
      const wide = new BigInt64Array(buffer);
      const out = new Int32Array(wide.length);
      for (let i = 0; i < wide.length; i++) {
        const v = wide[i]!;
        if (v < -2147483648n || v > 2147483647n) {
          throw new Error(`safetensors: tensor "${entry.name}" in ${entry.file}: I64 value ${v} at index ${i} does not fit in i32`);
        }
        out[i] = Number(v);
      }
      return out;
    }
  }
}

// ---- writing --------------------------------------------------------------------------------------------

const HOST_ARRAY_FOR: Record<WritableSafetensorsDType, typeof Float32Array | typeof Uint16Array | typeof Int32Array | typeof BigInt64Array> = {
  F32: Float32Array, F16: Uint16Array, BF16: Uint16Array, I32: Int32Array, I64: BigInt64Array,
};

async function writeAll(handle: FileHandle, bytes: Uint8Array, file: string): Promise<void> {
  const chunk = 1 << 30;
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await handle.write(bytes, done, Math.min(chunk, bytes.byteLength - done));
    if (bytesWritten <= 0) throw new Error(`safetensors: writing ${file} made no progress`);
    done += bytesWritten;
  }
}

/**
 * Writes a safetensors file the way the reference implementation does: header padded with spaces to a
 * multiple of 8 bytes, tensors ordered by element size (largest first) then name, with no gaps, so every
 * tensor starts at a multiple of its element size (for one-dtype files this is plain sorted-name order).
 * Tensors are written one at a time; there is no concatenated buffer.
 */
export async function writeSafetensors(
  file: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>,
): Promise<void> {
  assertLittleEndianHost();
  const seen = new Set<string>();
  for (const t of tensors) {
    if (t.name === '' || t.name === '__metadata__') throw new Error(`safetensors: cannot write ${file}: invalid tensor name "${t.name}"`);
    if (seen.has(t.name)) throw new Error(`safetensors: cannot write ${file}: tensor "${t.name}" appears twice`);
    seen.add(t.name);
    if (!(t.dtype in HOST_ARRAY_FOR)) throw new Error(`safetensors: cannot write ${file}: tensor "${t.name}" has unsupported dtype ${t.dtype}`);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new Error(`safetensors: cannot write ${file}: tensor "${t.name}" has invalid shape [${t.shape.join(', ')}]`);
    }
  }
  for (const [key, value] of Object.entries(metadata ?? {})) {
    if (typeof value !== 'string') throw new Error(`safetensors: cannot write ${file}: metadata "${key}" is not a string`);
  }

  const ordered = [...tensors].sort((a, b) =>
    SAFETENSORS_DTYPE_BYTES[b.dtype] - SAFETENSORS_DTYPE_BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  // Built by hand rather than JSON.stringify(object) so integer-like names cannot be reordered.
  const parts: string[] = [];
  if (metadata && Object.keys(metadata).length > 0) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  let offset = 0;
  for (const t of ordered) {
    const byteLength = t.shape.reduce((n, d) => n * d, 1) * SAFETENSORS_DTYPE_BYTES[t.dtype];
    parts.push(`${JSON.stringify(t.name)}:${JSON.stringify({ dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + byteLength] })}`);
    offset += byteLength;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const headerLength = Math.ceil(json.byteLength / 8) * 8;
  const head = new Uint8Array(8 + headerLength).fill(0x20);
  new DataView(head.buffer).setBigUint64(0, BigInt(headerLength), true);
  head.set(json, 8);

  await writeFileAtomic(file, async (handle) => {
    await writeAll(handle, head, file);
    for (const t of ordered) {
      const data = typeof t.data === 'function' ? await t.data() : t.data;
      const numel = t.shape.reduce((n, d) => n * d, 1);
      const expected = HOST_ARRAY_FOR[t.dtype];
      if (!(data instanceof expected)) {
        throw new Error(`safetensors: cannot write ${file}: tensor "${t.name}" (${t.dtype}) needs a ${expected.name}, got ${data.constructor.name}`);
      }
      if (data.length !== numel) {
        throw new Error(`safetensors: cannot write ${file}: tensor "${t.name}" has ${data.length} elements but shape [${t.shape.join(', ')}] needs ${numel}`);
      }
      await writeAll(handle, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), file);
    }
  });
}
