// safetensors I/O: exact round trips, byte layout against the format spec, and a hostile-input fuzzer: any
// truncated, corrupted or malicious file must produce a plain Error naming the file, never a crash, a hang,
// an allocation failure or a header that does not describe the file.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  MAX_HEADER_BYTES, SAFETENSORS_DTYPE_BYTES, type SafetensorsHeader, type TensorToWrite, readSafetensorsHeader,
  readTensorData, writeSafetensors,
} from '../src/model/safetensors.ts';

let dir = '';
let counter = 0;
const tmpFile = (label = 'f') => path.join(dir, `${label}-${counter++}.safetensors`);

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-safetensors-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** 8-byte little-endian length + header bytes + data, exactly as the spec lays a file out. */
function buildFile(header: string | Uint8Array, data: Uint8Array = new Uint8Array(0), declaredLength?: bigint): Uint8Array {
  const headerBytes = typeof header === 'string' ? new TextEncoder().encode(header) : header;
  const out = new Uint8Array(8 + headerBytes.length + data.length);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(data, 8 + headerBytes.length);
  return out;
}

/** The invariants any header the reader returns must satisfy: it describes the file exactly. */
function expectConsistent(h: SafetensorsHeader): void {
  expect(h.dataStart).toBe(8 + h.headerLength);
  expect(h.dataStart + h.dataSize).toBe(h.fileSize);
  const entries = [...h.tensors.values()].sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0]);
  let cursor = 0;
  for (const e of entries) {
    expect(e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)).toBe(true);
    expect(e.numel).toBe(e.shape.reduce((n, d) => n * d, 1));
    expect(e.byteLength).toBe(e.numel * SAFETENSORS_DTYPE_BYTES[e.dtype]);
    expect(e.dataOffsets[0]).toBe(cursor);
    expect(e.dataOffsets[1] - e.dataOffsets[0]).toBe(e.byteLength);
    expect(e.fileOffset).toBe(h.dataStart + e.dataOffsets[0]);
    cursor = e.dataOffsets[1];
  }
  expect(cursor).toBe(h.dataSize);
}

/** Either a plain Error naming the file, or a header that is consistent with the file (and readable). */
async function readHostile(file: string, mustThrow: boolean): Promise<void> {
  let header: SafetensorsHeader;
  try {
    header = await readSafetensorsHeader(file);
  } catch (err) {
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).constructor).toBe(Error); // not a RangeError from an allocation, nor a TypeError
    expect((err as Error).message).toContain(file);
    return;
  }
  if (mustThrow) throw new Error(`reader accepted a hostile header: ${JSON.stringify([...header.tensors.values()]).slice(0, 300)}`);
  expectConsistent(header);
  for (const entry of header.tensors.values()) await readTensorData(file, entry);
}

describe('round trip', () => {
  it('keeps names, dtypes, shapes, metadata and exact bits; pads the header to 8 bytes', async () => {
    const f32 = Float32Array.from([1.5, -0, Infinity, -Infinity, 3.4e38, 1e-45, 0.1, -7]);
    new Uint32Array(f32.buffer)[7] = 0x7fc12345; // a NaN with a payload must survive bit for bit
    const tensors: TensorToWrite[] = [
      { name: 'model.layers.0.w', dtype: 'F32', shape: [2, 4], data: f32 },
      { name: 'b.bf16', dtype: 'BF16', shape: [3], data: Uint16Array.from([0x3f80, 0xffff, 0x0001]) },
      { name: 'a.f16', dtype: 'F16', shape: [1, 1, 3], data: Uint16Array.from([0x3c00, 0x7e01, 0x8000]) },
      { name: 'ids', dtype: 'I32', shape: [2], data: Int32Array.from([-2147483648, 2147483647]) },
      { name: 'scalar', dtype: 'F32', shape: [], data: Float32Array.of(42) },
      { name: 'empty', dtype: 'BF16', shape: [0, 5], data: new Uint16Array(0) },
      { name: '10', dtype: 'F32', shape: [1], data: async () => Float32Array.of(-1) }, // integer-like name, lazy data
    ];
    const file = tmpFile('roundtrip');
    await writeSafetensors(file, tensors, { format: 'pt', note: 'ünïcode ✓' });
    const header = await readSafetensorsHeader(file);
    expectConsistent(header);
    expect(header.headerLength % 8).toBe(0);
    expect(header.metadata).toEqual({ format: 'pt', note: 'ünïcode ✓' });
    expect([...header.tensors.keys()].sort()).toEqual(tensors.map((t) => t.name).sort());
    for (const t of tensors) {
      const entry = header.tensors.get(t.name)!;
      expect(entry.dtype).toBe(t.dtype);
      expect(entry.shape).toEqual(t.shape);
      expect(entry.fileOffset % SAFETENSORS_DTYPE_BYTES[t.dtype]).toBe(0); // aligned in the file
      const data = await readTensorData(file, entry);
      const original = typeof t.data === 'function' ? await t.data() : t.data;
      expect(data.constructor).toBe(original.constructor);
      expect(bytesOf(data)).toEqual(bytesOf(original));
    }
    expect((await fs.readdir(dir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('orders tensors by name within a dtype and leaves no gaps', async () => {
    const file = tmpFile('order');
    const names = ['z', 'a', 'm.2', 'm.10'];
    await writeSafetensors(file, names.map((name, i) => ({ name, dtype: 'BF16' as const, shape: [i + 1], data: new Uint16Array(i + 1) })));
    const header = await readSafetensorsHeader(file);
    const byOffset = [...header.tensors.values()].sort((a, b) => a.fileOffset - b.fileOffset).map((e) => e.name);
    expect(byOffset).toEqual([...names].sort());
    expect(header.metadata).toEqual({});
  });

  it('writes the exact bytes the format spec describes', async () => {
    const file = tmpFile('layout');
    await writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [2], data: Float32Array.of(1, -2) }], { format: 'pt' });
    const json = '{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
    const padded = json + ' '.repeat((8 - (json.length % 8)) % 8);
    const expected = buildFile(padded, bytesOf(Float32Array.of(1, -2)));
    expect(new Uint8Array(await fs.readFile(file))).toEqual(expected);
  });

  it('parses a hand-built file, including I64 ids narrowed to i32', async () => {
    const f32 = Float32Array.of(0.5, 2, -3);
    const i64 = BigInt64Array.of(7n, -1n, 2147483647n);
    const data = new Uint8Array([...bytesOf(f32), ...bytesOf(i64)]);
    // Entries out of offset order, no padding, metadata last: all allowed by the spec.
    const header = '{"ids":{"dtype":"I64","shape":[3],"data_offsets":[12,36]},"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"__metadata__":{"k":"v"}}';
    const file = tmpFile('hand');
    await fs.writeFile(file, buildFile(header, data));
    const h = await readSafetensorsHeader(file);
    expectConsistent(h);
    expect(h.headerLength).toBe(header.length);
    expect(h.metadata).toEqual({ k: 'v' });
    expect(await readTensorData(file, h.tensors.get('x')!)).toEqual(f32);
    expect(await readTensorData(file, h.tensors.get('ids')!)).toEqual(Int32Array.of(7, -1, 2147483647));

    const tooWide = tmpFile('i64');
    await fs.writeFile(tooWide, buildFile('{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}', bytesOf(BigInt64Array.of(1n << 40n))));
    const entry = (await readSafetensorsHeader(tooWide)).tensors.get('ids')!;
    await expect(readTensorData(tooWide, entry)).rejects.toThrow(/"ids".*does not fit in i32/);
  });

  it('reports a file truncated after its header was read', async () => {
    const file = tmpFile('shrunk');
    await writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [64], data: new Float32Array(64) }]);
    const entry = (await readSafetensorsHeader(file)).tensors.get('w')!;
    await fs.truncate(file, entry.fileOffset + 10);
    await expect(readTensorData(file, entry)).rejects.toThrow(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.*end of file.*"w"`));
  });

  it('refuses bad input to the writer and leaves the target untouched', async () => {
    const file = tmpFile('atomic');
    await writeSafetensors(file, [{ name: 'keep', dtype: 'F32', shape: [1], data: Float32Array.of(1) }]);
    const before = await fs.readFile(file);
    const bad: [TensorToWrite[], RegExp][] = [
      [[{ name: 'w', dtype: 'F32', shape: [3], data: new Float32Array(2) }], /"w" has 2 elements but shape \[3\] needs 3/],
      [[{ name: 'w', dtype: 'BF16', shape: [2], data: async () => new Float32Array(2) }], /"w" \(BF16\) needs a Uint16Array/],
      [[{ name: 'w', dtype: 'F32', shape: [1], data: async () => { throw new Error('device lost'); } }], /device lost/],
      [[{ name: 'w', dtype: 'F32', shape: [-1], data: new Float32Array(0) }], /"w" has invalid shape/],
      [[{ name: 'w', dtype: 'F32', shape: [1], data: new Float32Array(1) }, { name: 'w', dtype: 'F32', shape: [1], data: new Float32Array(1) }], /"w" appears twice/],
      [[{ name: '__metadata__', dtype: 'F32', shape: [1], data: new Float32Array(1) }], /invalid tensor name "__metadata__"/],
    ];
    for (const [tensors, message] of bad) {
      await expect(writeSafetensors(file, tensors)).rejects.toThrow(message);
      expect(await fs.readFile(file)).toEqual(before);
    }
    expect((await fs.readdir(dir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});

describe('specific hostile headers', () => {
  const entry = (dtype: unknown, shape: unknown, offsets: unknown) => JSON.stringify({ dtype, shape, data_offsets: offsets });
  const cases: [string, string | Uint8Array, number, bigint | undefined, RegExp][] = [
    ['unsupported dtype', `{"t":${entry('F64', [1], [0, 8])}}`, 8, undefined, /unsupported dtype F64 for tensor "t"/],
    ['unsupported dtype BOOL', `{"t":${entry('BOOL', [1], [0, 1])}}`, 1, undefined, /unsupported dtype BOOL for tensor "t"/],
    ['unknown dtype', `{"t":${entry('Q4', [1], [0, 4])}}`, 4, undefined, /unknown dtype "Q4" for tensor "t"/],
    ['huge header length 2^53', '{}', 0, 2n ** 53n, /header length 9007199254740992 exceeds/],
    ['huge header length 2^64-1', '{}', 0, 2n ** 64n - 1n, /exceeds/],
    ['header length past the end', '{}', 0, 1000n, /past the end/],
    ['header length 0', '', 0, 0n, /too small/],
    ['not an object', '[1,2,3]', 0, undefined, /does not start with|not a JSON object/],
    ['JSON null', 'null', 0, undefined, /does not start with/],
    ['invalid UTF-8', new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), 0, undefined, /not valid UTF-8 JSON/],
    ['overflowing shape', `{"t":${entry('F32', [2 ** 30, 2 ** 30, 2 ** 30, 2 ** 30], [0, 0])}}`, 0, undefined, /needs more bytes/],
    ['unsafe integer dim', `{"t":${entry('F32', [2 ** 60], [0, 4])}}`, 4, undefined, /not a list of non-negative integers/],
    ['negative dim', `{"t":${entry('F32', [-1], [0, 4])}}`, 4, undefined, /not a list of non-negative integers/],
    ['fractional dim', `{"t":${entry('F32', [1.5], [0, 4])}}`, 4, undefined, /not a list of non-negative integers/],
    ['string dim', `{"t":${entry('F32', ['1'], [0, 4])}}`, 4, undefined, /not a list of non-negative integers/],
    ['negative offset', `{"t":${entry('F32', [1], [-4, 0])}}`, 4, undefined, /not non-negative integers/],
    ['reversed offsets', `{"t":${entry('F32', [0], [4, 0])}}`, 4, undefined, /begin 4 > end 0/],
    ['offset out of bounds', `{"t":${entry('F32', [1], [4, 8])}}`, 4, undefined, /past the data section/],
    ['wrong byte count', `{"t":${entry('F32', [2], [0, 4])}}`, 8, undefined, /hold 4 bytes but F32 shape \[2\] needs 8/],
    ['overlap', `{"a":${entry('F32', [2], [0, 8])},"b":${entry('F32', [1], [4, 8])}}`, 8, undefined, /"b".*overlaps tensor "a"/],
    ['gap', `{"a":${entry('F32', [1], [4, 8])}}`, 8, undefined, /gap of 4 bytes before tensor "a"/],
    ['trailing bytes', `{"a":${entry('F32', [1], [0, 4])}}`, 12, undefined, /cover 4 bytes but the data section holds 12/],
    ['entry not an object', '{"t":[1]}', 0, undefined, /tensor "t".*not an object/],
    ['missing offsets', `{"t":{"dtype":"F32","shape":[1]}}`, 4, undefined, /tensor "t".*data_offsets is missing/],
    ['three offsets', `{"t":${entry('F32', [1], [0, 4, 8])}}`, 4, undefined, /data_offsets is missing or not \[begin, end\]/],
    ['metadata not strings', '{"__metadata__":{"a":1}}', 0, undefined, /__metadata__ value for "a"/],
    ['metadata not an object', '{"__metadata__":"x"}', 0, undefined, /__metadata__ is not an object/],
    ['deeply nested junk', `{"t":${'['.repeat(200_000)}${']'.repeat(200_000)}}`, 0, undefined, /tensor "t"/],
    ['trailing garbage', '{}x', 0, undefined, /not valid UTF-8 JSON/],
  ];
  it.each(cases)('%s', async (_label, header, dataBytes, declared, message) => {
    const file = tmpFile('case');
    await fs.writeFile(file, buildFile(header, new Uint8Array(dataBytes), declared));
    const error = await readSafetensorsHeader(file).then(() => null, (err: unknown) => err);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).constructor).toBe(Error);
    expect((error as Error).message).toContain(file);
    expect((error as Error).message).toMatch(message);
  });

  it('names a file shorter than 8 bytes and a missing file', async () => {
    const file = tmpFile('tiny');
    await fs.writeFile(file, new Uint8Array([1, 0, 0]));
    await expect(readSafetensorsHeader(file)).rejects.toThrow(`${file} is 3 bytes`);
    await expect(readSafetensorsHeader(path.join(dir, 'absent.safetensors'))).rejects.toThrow(/cannot open .*absent\.safetensors/);
  });

  it(`refuses headers over ${MAX_HEADER_BYTES} bytes without reading them`, async () => {
    const file = tmpFile('big');
    const handle = await fs.open(file, 'w');
    const prefix = new Uint8Array(8);
    new DataView(prefix.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES + 1), true);
    await handle.write(prefix, 0, 8, 0);
    await handle.truncate(MAX_HEADER_BYTES + 16); // sparse: the length fits the file, only the limit catches it
    await handle.close();
    await expect(readSafetensorsHeader(file)).rejects.toThrow(/exceeds the 100000000-byte limit/);
    await fs.rm(file);
  });
});

describe('fuzzing the reader', () => {
  // A valid file to corrupt: mixed dtypes, metadata, a few tensors.
  let valid: Uint8Array;
  beforeAll(async () => {
    const file = tmpFile('seed');
    await writeSafetensors(file, [
      { name: 'model.embed_tokens.weight', dtype: 'BF16', shape: [5, 3], data: Uint16Array.from({ length: 15 }, (_, i) => 0x3f80 + i) },
      { name: 'model.norm.weight', dtype: 'F32', shape: [3], data: Float32Array.of(1, 2, 3) },
      { name: 'ids', dtype: 'I32', shape: [2, 2], data: Int32Array.of(1, 2, 3, 4) },
      { name: 'half', dtype: 'F16', shape: [1], data: Uint16Array.of(0x3c00) },
    ], { format: 'pt' });
    valid = new Uint8Array(await fs.readFile(file));
  });

  it('every truncation throws an error naming the file', async () => {
    await fc.assert(fc.asyncProperty(fc.nat(), async (seed) => {
      const file = tmpFile('trunc');
      await fs.writeFile(file, valid.subarray(0, seed % valid.length));
      await readHostile(file, true);
      await fs.rm(file);
    }), { numRuns: 150 });
  });

  it('random byte flips in the length and header give an error or a consistent header', async () => {
    const headerEnd = Number(new DataView(valid.buffer).getBigUint64(0, true)) + 8;
    const flip = fc.record({ at: fc.nat({ max: headerEnd - 1 }), mask: fc.integer({ min: 1, max: 255 }) });
    await fc.assert(fc.asyncProperty(fc.array(flip, { minLength: 1, maxLength: 4 }), async (flips) => {
      const bytes = valid.slice();
      for (const { at, mask } of flips) bytes[at]! ^= mask;
      const file = tmpFile('flip');
      await fs.writeFile(file, bytes);
      // A changed length beyond its low byte always breaks the file; elsewhere a flip may leave it valid
      // (a changed name or padding byte), and then the header must still describe the file.
      await readHostile(file, bytes.subarray(1, 8).some((byte, i) => byte !== valid[i + 1]));
      await fs.rm(file);
    }), { numRuns: 300 });
  });

  it('random declared header lengths never allocate or parse beyond the file', async () => {
    const actual = new DataView(valid.buffer).getBigUint64(0, true);
    const length = fc.oneof(
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      fc.constantFrom(2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n, BigInt(MAX_HEADER_BYTES), BigInt(MAX_HEADER_BYTES) + 1n),
      fc.bigInt({ min: 0n, max: BigInt(valid.length) + 16n }),
    ).filter((n) => n !== actual);
    await fc.assert(fc.asyncProperty(length, async (declared) => {
      const bytes = valid.slice();
      new DataView(bytes.buffer).setBigUint64(0, declared, true);
      const file = tmpFile('len');
      await fs.writeFile(file, bytes);
      await readHostile(file, true);
      await fs.rm(file);
    }), { numRuns: 200 });
  });

  // Hostile headers: entries with arbitrary dtypes, shapes and offsets over a data section of random size.
  const hostileInt = fc.oneof(
    fc.integer({ min: -8, max: 64 }),
    fc.constantFrom(-1, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, Number.MAX_SAFE_INTEGER, 1e308, -0, 0.5, 1e-9),
  );
  const hostileValue = fc.oneof(hostileInt, fc.string(), fc.constant(null), fc.boolean(), fc.jsonValue({ maxDepth: 3 }));
  const dtype = fc.oneof(fc.constantFrom('F32', 'F16', 'BF16', 'I32', 'I64', 'F64', 'U8', 'BOOL', 'f32', ''), fc.string(), hostileValue);
  const shape = fc.oneof(fc.array(hostileInt, { maxLength: 6 }), fc.array(fc.integer({ min: 0, max: 2 ** 20 }), { maxLength: 8 }), hostileValue);
  const offsets = fc.oneof(fc.tuple(hostileInt, hostileInt), fc.array(hostileInt, { maxLength: 4 }), hostileValue);
  const tensorEntry = fc.oneof(
    { weight: 4, arbitrary: fc.record({ dtype, shape, data_offsets: offsets }) },
    { weight: 1, arbitrary: fc.record({ dtype, shape, data_offsets: offsets }, { requiredKeys: [] }) },
    { weight: 1, arbitrary: hostileValue },
  );
  const metadataValue = fc.oneof(fc.dictionary(fc.string(), fc.string()), fc.dictionary(fc.string(), hostileValue), hostileValue);
  const header = fc.oneof(
    { weight: 6, arbitrary: fc.tuple(fc.dictionary(fc.string({ maxLength: 12 }), tensorEntry, { maxKeys: 5 }), fc.option(metadataValue))
      .map(([tensors, metadata]) => JSON.stringify(metadata === null ? tensors : { __metadata__: metadata, ...tensors })) },
    { weight: 1, arbitrary: fc.jsonValue().map((v) => JSON.stringify(v) ?? 'null') },
    { weight: 1, arbitrary: fc.nat({ max: 100_000 }).map((depth) => `{"t":${'['.repeat(depth)}${'{"a":'.repeat(depth % 7)}`) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary' }) },
  );

  it('hostile headers give an error or a consistent header, never a crash', async () => {
    await fc.assert(fc.asyncProperty(header, fc.nat({ max: 256 }), async (json, dataBytes) => {
      const file = tmpFile('hostile');
      await fs.writeFile(file, buildFile(json, new Uint8Array(dataBytes)));
      await readHostile(file, false);
      await fs.rm(file);
    }), { numRuns: 400 });
  });

  it('valid-looking headers with one thing wrong always throw', async () => {
    // Two correct F32 tensors tiling 16 bytes, then one field of one tensor replaced by something invalid.
    const broken = fc.oneof(
      fc.record({ field: fc.constant('dtype'), value: fc.oneof(fc.constantFrom('F64', 'U8', 'BOOL', 'I8', 'f32', 'Q4_0'), fc.integer()) }),
      fc.record({ field: fc.constant('shape'), value: fc.oneof(
        fc.array(fc.integer({ min: 2 ** 20, max: 2 ** 40 }), { minLength: 2, maxLength: 6 }),
        fc.constantFrom([-2], [2.5], [Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER], [3], [1], '2', null),
      ) }),
      fc.record({ field: fc.constant('data_offsets'), value: fc.oneof(
        fc.tuple(fc.integer({ min: -100, max: 100 }), fc.integer({ min: -100, max: 100 })).filter(([b, e]) => !(b === 0 && e === 8)),
        fc.constantFrom([0], [0, 8, 16], [2 ** 53, 2 ** 53 + 8], '0,8', null),
      ) }),
    );
    await fc.assert(fc.asyncProperty(broken, async ({ field, value }) => {
      const a: Record<string, unknown> = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
      const b = { dtype: 'F32', shape: [2], data_offsets: [8, 16] };
      a[field] = value;
      const file = tmpFile('broken');
      await fs.writeFile(file, buildFile(JSON.stringify({ a, b }), new Uint8Array(16)));
      await readHostile(file, true);
      await fs.rm(file);
    }), { numRuns: 200 });
  });
});
