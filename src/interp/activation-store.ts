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
// killed at any moment holds complete shards only, and the shards listed are exactly the work done.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { narrowFromF32, widenToF32 } from '../kernels/dtype.ts';
import { hookName } from '../model/hooks.ts';
import { readSafetensorsHeader, readTensorData, writeSafetensors, type SafetensorsHeader } from '../model/safetensors.ts';
import { writeFileAtomic } from '../io/atomic.ts';

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
  /** True once every row of `data` is in the store. */
  complete: boolean;
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
  };
  const sumExamples = shards.reduce((n, s) => n + s.examples, 0);
  const sumTokens = shards.reduce((n, s) => n + s.tokens, 0);
  if (sumExamples !== index.examples) fail(`"examples" is ${index.examples} but the shards hold ${sumExamples}`);
  if (sumTokens !== index.tokens) fail(`"tokens" is ${index.tokens} but the shards hold ${sumTokens}`);
  return index;
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

// ---- writing ------------------------------------------------------------------------------------------

export interface StoreWriterOptions {
  dir: string;
  /** The identity of the store; a resumed writer must be given the same (checked). */
  model: string;
  adapter: string;
  hooks: readonly string[];
  mlpNeurons: readonly string[];
  data: string;
  rendering: StoreRendering;
  maxTokens: number;
  /** A shard is written once it holds at least this many tokens. */
  shardTokens: number;
}

export interface PendingExample {
  example: number;
  inputIds: Int32Array;
  /** [T, hooks] */
  acts: Float32Array;
  /** [T, mlp_neurons]; omit when the store has none. */
  mlp?: Float32Array | null;
}

/**
 * Appends examples to a store, a shard at a time. `open` resumes a store made with the same identity
 * (model, adapter, hooks, data, rendering, truncation) and refuses any other, naming the field that differs.
 */
export class ActivationStoreWriter {
  private pending: PendingExample[] = [];
  private pendingTokens = 0;
  /** Rows consumed, including those pending (not yet durable). */
  private rowsSeen: number;

  private constructor(readonly options: StoreWriterOptions, readonly index: StoreIndex) {
    this.rowsSeen = index.rows_done;
  }

  static async open(options: StoreWriterOptions): Promise<ActivationStoreWriter> {
    const { dir } = options;
    await fs.mkdir(dir, { recursive: true });
    let existing: StoreIndex | null = null;
    try {
      await fs.access(path.join(dir, STORE_INDEX_FILE));
      existing = await readStoreIndex(dir);
    } catch (error) {
      if (error instanceof ActivationStoreError) throw error;
    }
    if (!existing) {
      const entries = (await fs.readdir(dir)).filter((f) => !f.startsWith('shard-') && !f.includes('.tmp-') && f !== 'tokenizer.json');
      if (entries.length > 0) throw new ActivationStoreError(`${dir} is not empty and holds no ${STORE_INDEX_FILE} (found ${entries.slice(0, 3).join(', ')}): choose an empty folder`);
      const index: StoreIndex = {
        format: STORE_FORMAT, version: STORE_VERSION, model: options.model, adapter: options.adapter,
        hooks: [...options.hooks], mlp_neurons: [...options.mlpNeurons], examples: 0, tokens: 0, shards: [],
        data: options.data, rendering: options.rendering, max_tokens: options.maxTokens, rows_done: 0, complete: false,
      };
      const writer = new ActivationStoreWriter(options, index);
      await writer.writeIndex();
      return writer;
    }
    const mismatch = (field: string, was: unknown, now: unknown) => new ActivationStoreError(
      `${path.join(dir, STORE_INDEX_FILE)}: this store was made with ${field} ${JSON.stringify(was)}, not ${JSON.stringify(now)}; `
      + 'rerun with the same options to resume it, or choose another --out');
    const same = (a: string, b: string) => path.resolve(a) === path.resolve(b);
    if (existing.hooks.join('\n') !== options.hooks.join('\n')) {
      throw mismatch('hooks', `${existing.hooks.length} adapter hooks`, `${options.hooks.length}`);
    }
    if (existing.mlp_neurons.length !== options.mlpNeurons.length) throw mismatch('mlp neurons', existing.mlp_neurons.length, options.mlpNeurons.length);
    if (!same(existing.model, options.model)) throw mismatch('--model', existing.model, options.model);
    if (!same(existing.adapter, options.adapter)) throw mismatch('--adapter', existing.adapter, options.adapter);
    if (!same(existing.data, options.data)) throw mismatch('--data', existing.data, options.data);
    if (existing.rendering !== options.rendering) throw mismatch('--format', existing.rendering, options.rendering);
    if (existing.max_tokens !== options.maxTokens) throw mismatch('--max-tokens', existing.max_tokens, options.maxTokens);
    return new ActivationStoreWriter(options, existing);
  }

  /** Rows of the input already in the store (or skipped): a resumed run starts at this row. */
  get rowsDone(): number {
    return this.index.rows_done;
  }

  get complete(): boolean {
    return this.index.complete;
  }

  /** Adds one example (acts [T, hooks], mlp [T, mlp_neurons]); writes a shard when enough tokens wait. */
  async add(example: PendingExample): Promise<void> {
    const T = example.inputIds.length;
    const H = this.index.hooks.length;
    const M = this.index.mlp_neurons.length;
    if (example.acts.length !== T * H) throw new Error(`ActivationStoreWriter: example ${example.example} has ${example.acts.length} activations, expected [${T}, ${H}]`);
    if (M > 0 && example.mlp?.length !== T * M) throw new Error(`ActivationStoreWriter: example ${example.example} has ${example.mlp?.length ?? 0} MLP values, expected [${T}, ${M}]`);
    this.pending.push(example);
    this.pendingTokens += T;
    this.rowsSeen = Math.max(this.rowsSeen, example.example + 1);
    if (this.pendingTokens >= this.options.shardTokens) await this.flush();
  }

  /** Records that rows before `row` were consumed (e.g. a skipped row), without adding an example. */
  skipTo(row: number): void {
    this.rowsSeen = Math.max(this.rowsSeen, row);
  }

  /** Writes the pending examples as one shard, then lists it in index.json. */
  async flush(): Promise<void> {
    if (this.pending.length === 0) {
      if (this.rowsSeen !== this.index.rows_done) {
        this.index.rows_done = this.rowsSeen;
        await this.writeIndex();
      }
      return;
    }
    const H = this.index.hooks.length;
    const M = this.index.mlp_neurons.length;
    const N = this.pendingTokens;
    const E = this.pending.length;
    const inputIds = new Int32Array(N);
    const offsets = new BigInt64Array(E + 1);
    const exampleIndex = new Int32Array(E);
    const acts = new Float32Array(N * H);
    const mlp = M > 0 ? new Float32Array(N * M) : null;
    let at = 0;
    this.pending.forEach((p, e) => {
      inputIds.set(p.inputIds, at);
      acts.set(p.acts, at * H);
      if (mlp) mlp.set(p.mlp!, at * M);
      exampleIndex[e] = p.example;
      at += p.inputIds.length;
      offsets[e + 1] = BigInt(at);
    });
    const file = shardFileName(this.index.shards.length);
    await writeSafetensors(path.join(this.options.dir, file), [
      { name: 'input_ids', dtype: 'I32', shape: [N], data: inputIds },
      { name: 'offsets', dtype: 'I64', shape: [E + 1], data: offsets },
      { name: 'example_index', dtype: 'I32', shape: [E], data: exampleIndex },
      { name: 'acts', dtype: 'F16', shape: [N, H], data: narrowFromF32(acts, 'f16') },
      ...(mlp ? [{ name: 'mlp', dtype: 'F16' as const, shape: [N, M], data: narrowFromF32(mlp, 'f16') }] : []),
    ], { format: STORE_FORMAT, hooks: String(H) });
    this.index.shards.push({ file, examples: E, tokens: N });
    this.index.examples += E;
    this.index.tokens += N;
    this.index.rows_done = this.rowsSeen;
    this.pending = [];
    this.pendingTokens = 0;
    await this.writeIndex();
  }

  /** Flushes and marks the store complete. */
  async finish(): Promise<StoreIndex> {
    await this.flush();
    this.index.complete = true;
    await this.writeIndex();
    return this.index;
  }

  private async writeIndex(): Promise<void> {
    const text = `${JSON.stringify(this.index, null, 2)}\n`;
    await writeFileAtomic(path.join(this.options.dir, STORE_INDEX_FILE), async (handle) => {
      await handle.writeFile(text, 'utf8');
    });
  }
}
