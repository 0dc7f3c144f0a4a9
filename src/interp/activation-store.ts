// The activation store: every adapter scalar A·x of every token of a data set, on disk, in a form a Python
// user reads with `safetensors.numpy.load_file`. A folder:
//
//   index.json          {"format": "rank1-activations", "version": 1, "model", "adapter", "hooks": [7·L names
//                        in paper order], "mlp_neurons": [...], "examples", "tokens", "shards": [{"file",
//                        "examples", "tokens"}], ...}
//   shard-00000.safetensors, ...
//     input_ids      I32 [N]         the tokens of the shard's examples, one after another
//     offsets        I64 [E+1]       example e is tokens offsets[e] .. offsets[e+1]
//     example_index  I32 [E]         the row number of each example in the input file
//     acts           F16 [N, 7L]     raw A·x, columns in `hooks` order (index 7·layer + j)
//     mlp            F16 [N, L·n]    optional: the first n up_proj outputs of each layer (`mlp_neurons` order)
//
// A shard is written whole (atomically) and only then listed in index.json (also atomically), so a store
// killed at any moment holds complete shards only, and the shards listed are exactly the work done. This
// module is the format and its reader; the writer is activation-store-writer.ts.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { widenToF32 } from '../kernels/dtype.ts';
import { hookName } from '../model/hooks.ts';
import { readSafetensorsHeader, readTensorData, type SafetensorsHeader } from '../model/safetensors.ts';
import type { ShardRecord } from '../io/shard.ts';

export const STORE_FORMAT = 'rank1-activations';
export const STORE_VERSION = 1;
export const STORE_INDEX_FILE = 'index.json';

export interface StoreShardInfo {
  file: string;
  examples: number;
  tokens: number;
}

/** How the rows were rendered to tokens: `rank1 train`'s rendering, or the paper's extraction text. */
export type StoreRendering = 'training' | 'paper';

export interface StoreIndex {
  format: typeof STORE_FORMAT;
  version: typeof STORE_VERSION;
  /** The model folder and adapter folder as given to `rank1 extract`. */
  model: string;
  adapter: string;
  /** Adapter hook names, one per `acts` column, in the paper's order. */
  hooks: string[];
  /** MLP neuron names (`model.layers.{l}.mlp.up_proj.output[i]`), one per `mlp` column, or []. */
  mlp_neurons: string[];
  examples: number;
  tokens: number;
  shards: StoreShardInfo[];
  /** The input file, its rendering and truncation: a rerun must match them to resume. */
  data: string;
  rendering: StoreRendering;
  max_tokens: number;
  /** Input rows consumed so far (written or skipped), so a resumed run starts at this row. */
  rows_done: number;
  /** True once every row of `data` is in the store (of the shard's rows, for a sharded store). */
  complete: boolean;
  /** A store of one shard (`rank1 extract --shard I/N`): the rows [from, to) of `rows` it covers. */
  shard?: ShardRecord;
}

/** A store that is missing, malformed, or does not fit what it is used with. */
export class ActivationStoreError extends Error {
  override name = 'ActivationStoreError';
}

export function shardFileName(index: number): string {
  return `shard-${String(index).padStart(5, '0')}.safetensors`;
}

/** `model.layers.{l}.mlp.up_proj.output[i]` for the first `neurons` of each of `layers`. */
export function mlpNeuronNames(layers: number, neurons: number): string[] {
  const names: string[] = [];
  for (let l = 0; l < layers; l++) for (let i = 0; i < neurons; i++) names.push(`${hookName.projectionOutput(l, 'up_proj')}[${i}]`);
  return names;
}

// ---- reading ------------------------------------------------------------------------------------------

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Reads and checks `STORE/index.json`; every problem names the file and the field. */
export async function readStoreIndex(dir: string): Promise<StoreIndex> {
  const file = path.join(dir, STORE_INDEX_FILE);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ActivationStoreError(code === 'ENOENT'
      ? `${dir} is not an activation store: there is no ${STORE_INDEX_FILE} (make one with rank1 extract)`
      : `${file}: cannot read: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ActivationStoreError(`${file}: not valid JSON: ${(error as Error).message}`);
  }
  const fail = (problem: string): never => {
    throw new ActivationStoreError(`${file}: ${problem}`);
  };
  if (!isRecord(raw)) return fail('expected a JSON object');
  if (raw['format'] !== STORE_FORMAT) fail(`"format" is ${JSON.stringify(raw['format'])}, expected "${STORE_FORMAT}"`);
  if (raw['version'] !== STORE_VERSION) fail(`"version" is ${JSON.stringify(raw['version'])}; this rank1 reads version ${STORE_VERSION}`);
  const stringList = (field: string): string[] => {
    const v = raw[field];
    if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) return fail(`"${field}" must be a list of strings`);
    return v as string[];
  };
  const count = (field: string, value: unknown = raw[field]): number => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) return fail(`"${field}" must be a non-negative integer, got ${JSON.stringify(value)}`);
    return value;
  };
  const string = (field: string): string => (typeof raw[field] === 'string' ? raw[field] as string : fail(`"${field}" must be a string`));
  const hooks = stringList('hooks');
  if (hooks.length === 0) fail('"hooks" is empty: the store holds no adapter activations');
  const shardsRaw = raw['shards'];
  if (!Array.isArray(shardsRaw)) fail('"shards" must be a list');
  const shards = (shardsRaw as unknown[]).map((s, i): StoreShardInfo => {
    if (!isRecord(s) || typeof s['file'] !== 'string') return fail(`shards[${i}] must be {"file", "examples", "tokens"}`);
    const name = s['file'];
    if (name.includes('/') || name.includes('\\') || name.startsWith('.')) fail(`shards[${i}].file "${name}" must be a file name inside the store`);
    return { file: name, examples: count(`shards[${i}].examples`, s['examples']), tokens: count(`shards[${i}].tokens`, s['tokens']) };
  });
  const index: StoreIndex = {
    format: STORE_FORMAT,
    version: STORE_VERSION,
    model: string('model'),
    adapter: string('adapter'),
    hooks,
    mlp_neurons: stringList('mlp_neurons'),
    examples: count('examples'),
    tokens: count('tokens'),
    shards,
    data: typeof raw['data'] === 'string' ? raw['data'] : '',
    rendering: raw['rendering'] === 'paper' ? 'paper' : 'training',
    max_tokens: typeof raw['max_tokens'] === 'number' ? raw['max_tokens'] : 0,
    rows_done: typeof raw['rows_done'] === 'number' ? raw['rows_done'] : 0,
    complete: raw['complete'] === true,
    ...(raw['shard'] === undefined ? {} : { shard: shardRecordField(raw['shard'], fail) }),
  };
  const sumExamples = shards.reduce((n, s) => n + s.examples, 0);
  const sumTokens = shards.reduce((n, s) => n + s.tokens, 0);
  if (sumExamples !== index.examples) fail(`"examples" is ${index.examples} but the shards hold ${sumExamples}`);
  if (sumTokens !== index.tokens) fail(`"tokens" is ${index.tokens} but the shards hold ${sumTokens}`);
  return index;
}

function shardRecordField(value: unknown, fail: (problem: string) => never): ShardRecord {
  if (!isRecord(value)) return fail('"shard" must be {"index", "count", "from", "to", "rows"}');
  const field = (name: keyof ShardRecord): number => {
    const v = value[name];
    return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : fail(`"shard.${name}" must be a non-negative integer, got ${JSON.stringify(v)}`);
  };
  return { index: field('index'), count: field('count'), from: field('from'), to: field('to'), rows: field('rows') };
}

/** One shard, decoded: acts and mlp widened to f32. */
export interface StoreShard {
  file: string;
  /** [N] */
  inputIds: Int32Array;
  /** [E+1] */
  offsets: Int32Array;
  /** [E] */
  exampleIndex: Int32Array;
  /** [N, hooks] row-major */
  acts: Float32Array;
  /** [N, mlp_neurons] row-major, or null */
  mlp: Float32Array | null;
}

/** One example of a store: its row number, its tokens and its activations (views into the shard). */
export interface StoreExample {
  /** Which shard it came from. */
  shard: number;
  example: number;
  inputIds: Int32Array;
  /** [T, hooks] */
  acts: Float32Array;
  /** [T, mlp_neurons] or null */
  mlp: Float32Array | null;
}

export class ActivationStore {
  private constructor(readonly dir: string, readonly index: StoreIndex) {}

  static async open(dir: string): Promise<ActivationStore> {
    return new ActivationStore(dir, await readStoreIndex(dir));
  }

  get hooks(): readonly string[] {
    return this.index.hooks;
  }

  get shardCount(): number {
    return this.index.shards.length;
  }

  /** Reads shard i, checking every tensor against index.json; a truncated or foreign shard names its file. */
  async readShard(i: number): Promise<StoreShard> {
    const info = this.index.shards[i];
    if (!info) throw new RangeError(`${this.dir}: shard ${i} does not exist (the store has ${this.index.shards.length})`);
    const file = path.join(this.dir, info.file);
    let header: SafetensorsHeader;
    try {
      header = await readSafetensorsHeader(file);
    } catch (error) {
      throw new ActivationStoreError(`${file}: unreadable shard of the store ${this.dir} (truncated or corrupt?): ${(error as Error).message}`);
    }
    const fail = (problem: string): never => {
      throw new ActivationStoreError(`${file}: ${problem}`);
    };
    const entry = (name: string, dtype: string, shape: number[]) => {
      const e = header.tensors.get(name);
      if (!e) return fail(`has no tensor "${name}"`);
      if (e.dtype !== dtype || e.shape.join() !== shape.join()) {
        fail(`tensor "${name}" is ${e.dtype} [${e.shape.join(', ')}], but ${STORE_INDEX_FILE} says ${dtype} [${shape.join(', ')}]`
          + (name === 'acts' && e.shape[1] !== shape[1] ? ` (a store made with ${e.shape[1]} hooks, not ${shape[1]}: from another model or adapter?)` : ''));
      }
      return e;
    };
    const N = info.tokens;
    const E = info.examples;
    const ids = entry('input_ids', 'I32', [N]);
    const offs = entry('offsets', 'I64', [E + 1]);
    const rows = entry('example_index', 'I32', [E]);
    const acts = entry('acts', 'F16', [N, this.index.hooks.length]);
    const mlpEntry = this.index.mlp_neurons.length > 0 ? entry('mlp', 'F16', [N, this.index.mlp_neurons.length]) : null;
    const handle = await fs.open(file, 'r');
    try {
      const inputIds = await readTensorData(handle, ids) as Int32Array;
      const offsets = await readTensorData(handle, offs) as Int32Array;
      const exampleIndex = await readTensorData(handle, rows) as Int32Array;
      if (offsets[0] !== 0 || offsets[E] !== N) fail(`offsets must run from 0 to ${N}, got ${offsets[0]} .. ${offsets[E]}`);
      for (let e = 0; e < E; e++) if (offsets[e + 1]! < offsets[e]!) fail(`offsets decrease at example ${e}`);
      return {
        file,
        inputIds,
        offsets,
        exampleIndex,
        acts: widenToF32(await readTensorData(handle, acts) as Uint16Array, 'f16'),
        mlp: mlpEntry ? widenToF32(await readTensorData(handle, mlpEntry) as Uint16Array, 'f16') : null,
      };
    } finally {
      await handle.close();
    }
  }

  /** Every example in store order, one shard in memory at a time. */
  async *examples(): AsyncGenerator<StoreExample> {
    const H = this.index.hooks.length;
    const M = this.index.mlp_neurons.length;
    for (let s = 0; s < this.index.shards.length; s++) {
      const shard = await this.readShard(s);
      for (let e = 0; e < shard.exampleIndex.length; e++) {
        const from = shard.offsets[e]!;
        const to = shard.offsets[e + 1]!;
        yield {
          shard: s,
          example: shard.exampleIndex[e]!,
          inputIds: shard.inputIds.subarray(from, to),
          acts: shard.acts.subarray(from * H, to * H),
          mlp: shard.mlp ? shard.mlp.subarray(from * M, to * M) : null,
        };
      }
    }
  }
}
