// A Hugging Face checkpoint folder: config.json plus model.safetensors, or model.safetensors.index.json and
// its shards model-0000i-of-0000n.safetensors. Opening reads only headers and checks every tensor against
// the config; loading reads one tensor at a time (peak host memory ≈ the largest tensor) and keeps its
// storage dtype: bf16 weights stay bf16 on the device.
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';

import type { Backend, FloatDType } from '../kernels/backend.ts';
import { narrowFromF32 } from '../kernels/dtype.ts';
import { Tensor, formatShape } from '../tensor/tensor.ts';
import {
  type ExpectedTensor, type Qwen2Config, type TorchDType, expectedQwen2Tensors, parseQwen2Config, qwen2ConfigToJson,
} from './config.ts';
import {
  type HostData, type SafetensorsEntry, SAFETENSORS_DTYPE_BYTES, type TensorToWrite, fromSafetensorsDType,
  readSafetensorsHeader, readTensorData, toSafetensorsDType, writeSafetensors,
} from './safetensors.ts';
import { writeFileAtomic } from '../io/atomic.ts';

export const CONFIG_FILE = 'config.json';
export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';
const SHARD_PATTERN = /^model-\d{5}-of-\d{5}\.safetensors$/;
/** How many names a "missing tensors" error lists before it only counts. */
const LISTED_NAMES = 5;

export interface LoadProgress {
  name: string;
  bytesDone: number;
  bytesTotal: number;
}

const TORCH_TO_STORAGE: Record<TorchDType, FloatDType> = { float32: 'f32', float16: 'f16', bfloat16: 'bf16' };
const STORAGE_TO_TORCH: Record<FloatDType, TorchDType> = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' };

export class Checkpoint {
  /** Bytes of the expected tensors: what loadAll reads. */
  readonly totalBytes: number;

  constructor(
    readonly dir: string,
    readonly config: Qwen2Config,
    /** The safetensors files, in shard order. */
    readonly files: readonly string[],
    /** Every tensor found, expected or not. */
    readonly tensors: ReadonlyMap<string, SafetensorsEntry>,
    /** In model order; all present with the right shapes (openCheckpoint checked). */
    readonly expected: readonly ExpectedTensor[],
    /** Present but not part of a Qwen2 model of this config (a tied model's extra lm_head.weight excepted). */
    readonly unexpected: readonly string[],
    /** Human-readable notes for the caller to print: unexpected tensors, an ignored index, and so on. */
    readonly warnings: readonly string[],
  ) {
    this.totalBytes = expected.reduce((n, e) => n + this.entry(e.name).byteLength, 0);
  }

  entry(name: string): SafetensorsEntry {
    const entry = this.tensors.get(name);
    if (!entry) throw new Error(`checkpoint ${this.dir} has no tensor "${name}"`);
    return entry;
  }

  /** One tensor on `backend`, in its storage dtype (F32 -> f32, F16 -> f16, BF16 -> bf16). */
  async loadTensor(name: string, backend: Backend): Promise<Tensor> {
    const entry = this.entry(name);
    return uploadEntry(entry, await readTensorData(entry.file, entry), backend);
  }

  /**
   * Every expected tensor, read one at a time (each file opened once, read in offset order), keyed by
   * name in model order. On failure the tensors already uploaded are freed.
   */
  async loadAll(backend: Backend, onProgress?: (progress: LoadProgress) => void): Promise<Map<string, Tensor>> {
    const byFile = new Map<string, SafetensorsEntry[]>();
    for (const { name } of this.expected) {
      const entry = this.entry(name);
      const list = byFile.get(entry.file) ?? [];
      list.push(entry);
      byFile.set(entry.file, list);
    }
    const loaded = new Map<string, Tensor>();
    let bytesDone = 0;
    try {
      for (const [file, entries] of byFile) {
        entries.sort((a, b) => a.fileOffset - b.fileOffset);
        let handle: FileHandle;
        try {
          handle = await fs.open(file, 'r');
        } catch (err) {
          throw new Error(`checkpoint ${this.dir}: cannot open ${file}: ${(err as Error).message}`);
        }
        try {
          for (const entry of entries) {
            loaded.set(entry.name, uploadEntry(entry, await readTensorData(handle, entry), backend));
            bytesDone += entry.byteLength;
            onProgress?.({ name: entry.name, bytesDone, bytesTotal: this.totalBytes });
          }
        } finally {
          await handle.close();
        }
      }
    } catch (err) {
      for (const t of loaded.values()) t.dispose();
      throw err;
    }
    return new Map(this.expected.map((e) => [e.name, loaded.get(e.name)!]));
  }
}

function uploadEntry(entry: SafetensorsEntry, data: HostData, backend: Backend): Tensor {
  return Tensor.fromStorage(backend, backend.adopt(data, fromSafetensorsDType(entry.dtype)), entry.shape);
}

async function readJson(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`${what} ${file} cannot be read: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${file} is not valid JSON: ${(err as Error).message}`);
  }
}

const exists = (file: string) => fs.stat(file).then((s) => s.isFile(), () => false);

/**
 * Reads `dir/config.json` and the safetensors headers, and checks every tensor the config implies is
 * present with the right shape and a float dtype. Throws on anything missing or mis-shaped; returns
 * unexpected tensors as warnings.
 */
export async function openCheckpoint(dir: string): Promise<Checkpoint> {
  const dirStat = await fs.stat(dir).catch(() => null);
  if (!dirStat?.isDirectory()) throw new Error(`checkpoint ${dir} is not a directory`);
  const configFile = path.join(dir, CONFIG_FILE);
  const config = parseQwen2Config(await readJson(configFile, 'checkpoint config'), configFile);

  const warnings: string[] = [];
  const singleFile = path.join(dir, SINGLE_FILE);
  const indexFile = path.join(dir, INDEX_FILE);
  const tensors = new Map<string, SafetensorsEntry>();
  let files: string[];
  if (await exists(singleFile)) {
    if (await exists(indexFile)) warnings.push(`${dir}: both ${SINGLE_FILE} and ${INDEX_FILE} exist; using ${SINGLE_FILE}`);
    files = [singleFile];
    for (const [name, entry] of (await readSafetensorsHeader(singleFile)).tensors) tensors.set(name, entry);
  } else if (await exists(indexFile)) {
    files = await readShards(dir, indexFile, tensors, warnings);
  } else {
    const entries = await fs.readdir(dir);
    const torchOnly = entries.some((e) => e.endsWith('.bin') || e.endsWith('.pt') || e.endsWith('.pth'));
    throw new Error(`checkpoint ${dir} has neither ${SINGLE_FILE} nor ${INDEX_FILE}${torchOnly ? ' (only PyTorch .bin/.pt weights: convert them to safetensors)' : ''}`);
  }

  const expected = expectedQwen2Tensors(config);
  const expectedNames = new Set(expected.map((e) => e.name));
  const missing = expected.filter((e) => !tensors.has(e.name)).map((e) => e.name);
  if (missing.length > 0) {
    const listed = missing.slice(0, LISTED_NAMES).join(', ');
    const more = missing.length > LISTED_NAMES ? `, … (${missing.length - LISTED_NAMES} more)` : '';
    throw new Error(`checkpoint ${dir} (${files.map((f) => path.basename(f)).join(', ')}) is missing ${missing.length} of ${expected.length} tensors the config implies: ${listed}${more}`);
  }
  for (const { name, shape } of expected) {
    const entry = tensors.get(name)!;
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`${entry.file}: tensor "${name}" has shape ${formatShape(entry.shape)} but ${configFile} implies ${formatShape(shape)}`);
    }
    if (entry.dtype !== 'F32' && entry.dtype !== 'F16' && entry.dtype !== 'BF16') {
      throw new Error(`${entry.file}: tensor "${name}" has dtype ${entry.dtype}; weights must be F32, F16 or BF16`);
    }
  }
  const unexpected = [...tensors.keys()].filter((name) => !expectedNames.has(name) && !(config.tieWordEmbeddings && name === 'lm_head.weight'));
  if (unexpected.length > 0) {
    warnings.push(`checkpoint ${dir} has ${unexpected.length} tensors a Qwen2 model does not use (ignored): ${unexpected.slice(0, LISTED_NAMES).join(', ')}${unexpected.length > LISTED_NAMES ? ', …' : ''}`);
  }
  return new Checkpoint(dir, config, files, tensors, expected, unexpected, warnings);
}

/** Validates the index's weight_map against the shards' headers; fills `tensors`; returns the shard paths. */
async function readShards(
  dir: string, indexFile: string, tensors: Map<string, SafetensorsEntry>, warnings: string[],
): Promise<string[]> {
  const index = await readJson(indexFile, 'checkpoint index');
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new Error(`${indexFile}: weight_map is missing or not an object`);
  }
  const namesByShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(weightMap)) {
    // A shard must be a plain file name in this folder: a hostile index must not reach elsewhere.
    if (typeof shard !== 'string' || shard === '' || shard === '.' || shard === '..' || path.basename(shard) !== shard || shard.includes('\\')) {
      throw new Error(`${indexFile}: weight_map entry for tensor "${name}" is not a file name in ${dir}: ${JSON.stringify(shard)}`);
    }
    const list = namesByShard.get(shard) ?? [];
    list.push(name);
    namesByShard.set(shard, list);
  }
  if (namesByShard.size === 0) throw new Error(`${indexFile}: weight_map is empty`);

  const shards = [...namesByShard.keys()].sort();
  const files: string[] = [];
  let totalBytes = 0;
  for (const shard of shards) {
    const file = path.join(dir, shard);
    const names = namesByShard.get(shard)!;
    if (!(await exists(file))) {
      throw new Error(`${indexFile}: shard ${shard} (holding ${names.length} tensors, e.g. "${names[0]}") does not exist in ${dir}`);
    }
    files.push(file);
    const header = await readSafetensorsHeader(file);
    const mapped = new Set(names);
    for (const name of names) {
      const entry = header.tensors.get(name);
      if (!entry) throw new Error(`${indexFile}: maps tensor "${name}" to ${shard}, but ${file} has no such tensor`);
      tensors.set(name, entry);
      totalBytes += entry.byteLength;
    }
    for (const name of header.tensors.keys()) {
      if (!mapped.has(name)) warnings.push(`${file}: tensor "${name}" is not mapped to this shard in ${INDEX_FILE} (ignored)`);
    }
  }
  const declared = (index as { metadata?: { total_size?: unknown } }).metadata?.total_size;
  if (typeof declared === 'number' && declared !== totalBytes) {
    warnings.push(`${indexFile}: metadata.total_size is ${declared} but the mapped tensors hold ${totalBytes} bytes`);
  }
  return files;
}

// ---- writing --------------------------------------------------------------------------------------------

export interface WriteCheckpointOptions {
  /** Number of safetensors files; 1 (default) writes model.safetensors, more write shards and an index. */
  shards?: number;
  /** Storage dtype of every tensor in the files; default: the config's torch_dtype. */
  dtype?: FloatDType;
}

/** The raw bits of `t` in `dtype`, straight from storage when no conversion is needed. */
async function hostBits(t: Tensor, dtype: FloatDType, name: string): Promise<HostData> {
  if (t.dtype === dtype && t.isContiguous && t.offset === 0 && t.storage.numel === t.size) {
    return t.backend.readRaw(t.storage);
  }
  const values = await t.backend.read(t);
  if (values instanceof Int32Array) throw new Error(`writeCheckpoint: tensor "${name}" is i32; weights must be float`);
  return dtype === 'f32' ? values : narrowFromF32(values, dtype);
}

/** Splits sizes into `count` non-empty contiguous groups of roughly equal total; returns each group's start. */
function balancedCuts(sizes: readonly number[], count: number): number[] {
  const starts: number[] = [];
  let i = 0;
  let remainingBytes = sizes.reduce((a, b) => a + b, 0);
  for (let group = 0; group < count; group++) {
    starts.push(i);
    const groupsLeft = count - group;
    const target = remainingBytes / groupsLeft;
    let bytes = sizes[i]!;
    i++;
    while (i < sizes.length - (groupsLeft - 1) && bytes + sizes[i]! / 2 <= target) bytes += sizes[i++]!;
    if (group === count - 1) i = sizes.length;
    remainingBytes -= bytes;
  }
  return starts;
}

/**
 * Writes a Hugging Face checkpoint folder transformers can load: config.json (torch_dtype = `dtype`) and
 * either model.safetensors or `shards` files plus model.safetensors.index.json. `tensors` must be exactly
 * the config's expected tensors with their shapes; each is read from its backend and written one at a time.
 * Every file is written atomically; weight files of the other layout left from an earlier write are removed.
 */
export async function writeCheckpoint(
  dir: string,
  config: Qwen2Config,
  tensors: ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>,
  options: WriteCheckpointOptions = {},
): Promise<void> {
  const dtype = options.dtype ?? TORCH_TO_STORAGE[config.torchDtype];
  const shardCount = options.shards ?? 1;
  const byName: ReadonlyMap<string, Tensor> = tensors instanceof Map
    ? tensors as ReadonlyMap<string, Tensor>
    : new Map(Object.entries(tensors as Readonly<Record<string, Tensor>>));
  const expected = expectedQwen2Tensors(config);
  const expectedNames = new Set(expected.map((e) => e.name));
  const missing = expected.filter((e) => !byName.has(e.name)).map((e) => e.name);
  if (missing.length > 0) {
    throw new Error(`writeCheckpoint ${dir}: missing ${missing.length} tensors: ${missing.slice(0, LISTED_NAMES).join(', ')}${missing.length > LISTED_NAMES ? ', …' : ''}`);
  }
  const extra = [...byName.keys()].filter((name) => !expectedNames.has(name));
  if (extra.length > 0) throw new Error(`writeCheckpoint ${dir}: tensors not in a Qwen2 model of this config: ${extra.slice(0, LISTED_NAMES).join(', ')}`);
  for (const { name, shape } of expected) {
    const t = byName.get(name)!;
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`writeCheckpoint ${dir}: tensor "${name}" has shape ${formatShape(t.shape)} but the config implies ${formatShape(shape)}`);
    }
  }
  if (!Number.isSafeInteger(shardCount) || shardCount < 1 || shardCount > expected.length || shardCount > 99999) {
    throw new Error(`writeCheckpoint ${dir}: shards must be an integer from 1 to ${expected.length}, got ${shardCount}`);
  }

  await fs.mkdir(dir, { recursive: true });
  const stDtype = toSafetensorsDType(dtype);
  const toWrite: TensorToWrite[] = expected.map(({ name, shape }) => ({
    name, dtype: stDtype, shape, data: () => hostBits(byName.get(name)!, dtype, name),
  }));
  const metadata = { format: 'pt' };
  const written = new Set<string>();
  if (shardCount === 1) {
    await writeSafetensors(path.join(dir, SINGLE_FILE), toWrite, metadata);
    written.add(SINGLE_FILE);
  } else {
    const bytes = toWrite.map((t) => t.shape.reduce((n, d) => n * d, 1) * SAFETENSORS_DTYPE_BYTES[stDtype]);
    const starts = [...balancedCuts(bytes, shardCount), toWrite.length];
    const weightMap: Record<string, string> = {};
    const pad = (n: number) => String(n).padStart(5, '0');
    for (let s = 0; s < shardCount; s++) {
      const shard = `model-${pad(s + 1)}-of-${pad(shardCount)}.safetensors`;
      const group = toWrite.slice(starts[s], starts[s + 1]);
      await writeSafetensors(path.join(dir, shard), group, metadata);
      for (const t of group) weightMap[t.name] = shard;
      written.add(shard);
    }
    const sortedMap = Object.fromEntries(Object.keys(weightMap).sort().map((name) => [name, weightMap[name]!]));
    const index = { metadata: { total_size: bytes.reduce((a, b) => a + b, 0) }, weight_map: sortedMap };
    await writeTextAtomic(path.join(dir, INDEX_FILE), `${JSON.stringify(index, null, 2)}\n`);
    written.add(INDEX_FILE);
  }
  const configJson = qwen2ConfigToJson({ ...config, torchDtype: STORAGE_TO_TORCH[dtype] });
  await writeTextAtomic(path.join(dir, CONFIG_FILE), `${JSON.stringify(configJson, null, 2)}\n`);

  for (const name of await fs.readdir(dir)) {
    const stale = name === SINGLE_FILE || name === INDEX_FILE || SHARD_PATTERN.test(name);
    if (stale && !written.has(name)) await fs.rm(path.join(dir, name), { force: true });
  }
}

async function writeTextAtomic(file: string, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  await writeFileAtomic(file, async (handle) => {
    await handle.writeFile(bytes);
  });
}

/**
 * Files of a Hugging Face folder that are not weights or config.json: the tokenizer (tokenizer.json and the
 * slow tokenizer's vocab.json/merges.txt), its config and special tokens, the chat template, the generation
 * config, and a toy world's manifest. A model written from another (a full finetune, a pretrained model)
 * copies them so that the new folder is as usable as the old.
 */
export const COMPANION_FILES = [
  'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt', 'chat_template.jinja',
  'generation_config.json', 'world.json',
] as const;

/** Copies the companion files `from` has into `to` (those it lacks are skipped); returns the names copied. */
export async function copyCompanionFiles(from: string, to: string): Promise<string[]> {
  const copied: string[] = [];
  for (const name of COMPANION_FILES) {
    try {
      await fs.copyFile(path.join(from, name), path.join(to, name));
      copied.push(name);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`copying ${name} from ${from} to ${to}: ${(error as Error).message}`, { cause: error });
    }
  }
  return copied;
}
