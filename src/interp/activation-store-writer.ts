// Writing an activation store (the format is described in activation-store.ts): examples are gathered into a
// shard, the shard is written whole (atomically) and only then listed in index.json (also atomically).
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { narrowFromF32 } from '../kernels/dtype.ts';
import { writeSafetensors } from '../model/safetensors.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import type { ShardRecord } from '../io/shard.ts';
import {
  ActivationStoreError, STORE_FORMAT, STORE_INDEX_FILE, STORE_VERSION, readStoreIndex, shardFileName, type StoreIndex, type StoreRendering,
} from './activation-store.ts';

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
  /** The rows this store covers when it is one shard of a sharded extraction (`--shard I/N`). */
  shard?: ShardRecord;
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
        ...(options.shard ? { shard: { ...options.shard } } : {}),
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
    const shardText = (s: ShardRecord | undefined) => (s ? `${s.index}/${s.count} of ${s.rows} rows` : 'none');
    if (shardText(existing.shard) !== shardText(options.shard)) throw mismatch('--shard', shardText(existing.shard), shardText(options.shard));
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
