// The SAE's training data: activations streamed from an activation store or from a user's safetensors file
// with a 2-D `activations` tensor [N, d]. Tokens are split once, by a hash of their index, into training (95%)
// and held-out (5%, for the FVU); training tokens pass through a seeded shuffle buffer of fixed size, so
// memory does not grow with the data set.
import { promises as fs } from 'node:fs';
import { widenToF32 } from '../kernels/dtype.ts';
import { Random } from '../tensor/random.ts';
import { readSafetensorsHeader, readTensorData, type SafetensorsEntry } from '../model/safetensors.ts';
import type { ActivationStore } from './activation-store.ts';

/** Where activations come from: `d` columns named `columns`, `tokens` rows, read in order in chunks. */
export interface ActivationSource {
  what: string;
  d: number;
  columns: string[];
  tokens: number;
  /** Rows in order, as [n, d] chunks. */
  chunks(): AsyncGenerator<Float32Array>;
}

export function storeSource(store: ActivationStore): ActivationSource {
  return {
    what: store.dir,
    d: store.index.hooks.length,
    columns: [...store.index.hooks],
    tokens: store.index.tokens,
    async *chunks() {
      for (let s = 0; s < store.shardCount; s++) yield (await store.readShard(s)).acts;
    },
  };
}

/** A safetensors file with `activations` [N, d] (F32, F16 or BF16), read 64k rows at a time. */
export async function safetensorsSource(file: string): Promise<ActivationSource> {
  const header = await readSafetensorsHeader(file);
  const entry = header.tensors.get('activations');
  if (!entry) throw new Error(`${file}: no tensor named "activations" (found ${[...header.tensors.keys()].slice(0, 5).join(', ') || 'none'}); rank1 sae train --input needs activations [N, d]`);
  if (entry.shape.length !== 2) throw new Error(`${file}: "activations" must be 2-D [N, d], got [${entry.shape.join(', ')}]`);
  if (entry.dtype !== 'F32' && entry.dtype !== 'F16' && entry.dtype !== 'BF16') throw new Error(`${file}: "activations" is ${entry.dtype}; F32, F16 or BF16 expected`);
  const [N, d] = entry.shape as [number, number];
  if (N === 0 || d === 0) throw new Error(`${file}: "activations" is empty ([${N}, ${d}])`);
  const width = entry.dtype === 'F32' ? 4 : 2;
  const columns = header.metadata['columns'] ? JSON.parse(header.metadata['columns']) as string[] : Array.from({ length: d }, (_, j) => `column ${j}`);
  return {
    what: file, d, columns, tokens: N,
    async *chunks() {
      const handle = await fs.open(file, 'r');
      try {
        const rowsPerChunk = 1 << 16;
        for (let start = 0; start < N; start += rowsPerChunk) {
          const rows = Math.min(rowsPerChunk, N - start);
          const part: SafetensorsEntry = { ...entry, shape: [rows, d], numel: rows * d, fileOffset: entry.fileOffset + start * d * width, byteLength: rows * d * width };
          const data = await readTensorData(handle, part);
          yield entry.dtype === 'F32' ? data as Float32Array : widenToF32(data as Uint16Array, entry.dtype === 'F16' ? 'f16' : 'bf16');
        }
      } finally {
        await handle.close();
      }
    },
  };
}

/** Token t is held out (5%) when a hash of t lands in the last twentieth. */
export function isHeldOut(token: number): boolean {
  let h = Math.imul(token ^ 0x9e3779b9, 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return ((h ^ (h >>> 16)) >>> 0) % 20 === 0;
}

/**
 * Training batches [batch, d] for `epochs` passes: held-out tokens skipped, the rest through a shuffle buffer
 * of `bufferRows` rows (each emitted row is a uniformly random one of the buffer). The last partial batch of a
 * pass is dropped. Deterministic for a seed.
 */
export async function* shuffledBatches(source: ActivationSource, batch: number, epochs: number, seed: number, bufferRows: number): AsyncGenerator<Float32Array> {
  const d = source.d;
  const rng = new Random(seed);
  const capacity = Math.max(bufferRows, batch);
  const buffer = new Float32Array(capacity * d);
  for (let epoch = 0; epoch < epochs; epoch++) {
    let filled = 0;
    let out = new Float32Array(batch * d);
    let outRows = 0;
    const emitOne = function* (): Generator<Float32Array> {
      const pick = rng.int(filled);
      out.set(buffer.subarray(pick * d, (pick + 1) * d), outRows * d);
      buffer.copyWithin(pick * d, (filled - 1) * d, filled * d);
      filled--;
      if (++outRows === batch) {
        yield out;
        out = new Float32Array(batch * d);
        outRows = 0;
      }
    };
    let token = 0;
    for await (const chunk of source.chunks()) {
      const rows = chunk.length / d;
      for (let r = 0; r < rows; r++, token++) {
        if (isHeldOut(token)) continue;
        if (filled === capacity) yield* emitOne();
        buffer.set(chunk.subarray(r * d, (r + 1) * d), filled * d);
        filled++;
      }
    }
    while (filled > 0) yield* emitOne();
  }
}

/** The held-out tokens, [n, d] (5% of the data; read once for the FVU). */
export async function heldOutRows(source: ActivationSource, limit = 1 << 18): Promise<Float32Array> {
  const d = source.d;
  const parts: Float32Array[] = [];
  let count = 0;
  let token = 0;
  for await (const chunk of source.chunks()) {
    const rows = chunk.length / d;
    for (let r = 0; r < rows; r++, token++) {
      if (!isHeldOut(token) || count >= limit) continue;
      parts.push(chunk.slice(r * d, (r + 1) * d));
      count++;
    }
  }
  const out = new Float32Array(count * d);
  parts.forEach((p, i) => out.set(p, i * d));
  return out;
}

export function trainingTokenCount(tokens: number): number {
  let held = 0;
  for (let t = 0; t < tokens; t++) if (isHeldOut(t)) held++;
  return tokens - held;
}
