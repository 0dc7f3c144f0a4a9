// Extraction: run the model with its rank-1 adapter over a data set and write every adapter scalar A·x of
// every token (and optionally the first n up_proj neurons of each layer, the paper's MLP baseline) to an
// activation store (activation-store.ts). Streams: one row, one forward and one shard in memory at a time.
// Resumable: rerunning with the same options continues after the last shard written.
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { parquetMetadataAsync, asyncBufferFromFile } from 'hyparquet';
import { cat, detach, slice, unsqueeze } from '../tensor/ops.ts';
import { keep, tidy, type Tensor } from '../tensor/tensor.ts';
import { adapterHookNames, hookName } from '../model/hooks.ts';
import { withHooks, type HookSpec } from '../model/hook-registry.ts';
import { runWithCache } from '../model/activation-cache.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import { fileMagic, iterateTrainingRows, tokenizeRow, TrainingDataError } from '../train/data.ts';
import type { TrainingRow } from '../train/data-rows.ts';
import { ActivationStoreWriter, mlpNeuronNames, type StoreIndex, type StoreRendering } from './activation-store.ts';

/** The paper's extraction prompt (reasoning-lora-interp): a system turn, and no `<|im_end|>` between turns. */
export const PAPER_SYSTEM_PROMPT = 'You are a helpful mathematics assistant.';

/**
 * The text the paper's extraction feeds the model for an s1K row, byte for byte:
 * `<|im_start|>system\n{system}\n<|im_start|>user\n{question}\n<|im_start|>assistant\n<|im_start|>think\n
 * {trajectory}\n<|im_start|>answer\n{attempt}<|im_end|>`.
 */
export function paperExtractionText(question: string, trajectory: string | readonly string[], attempt: string): string {
  const thinking = typeof trajectory === 'string' ? trajectory : trajectory.join('\n');
  return `<|im_start|>system\n${PAPER_SYSTEM_PROMPT}\n<|im_start|>user\n${question}\n<|im_start|>assistant\n`
    + `<|im_start|>think\n${thinking}\n<|im_start|>answer\n${attempt}<|im_end|>`;
}

/** Token ids of one row as extraction sees it, cut to maxTokens. */
export function extractionIds(row: TrainingRow, tokenizer: Tokenizer | null, rendering: StoreRendering, template: string, maxTokens: number): Int32Array {
  if (rendering === 'paper') {
    if (row.kind !== 's1k') throw new TrainingDataError(`${row.source}: --format paper renders s1K-1.1 rows {question, deepseek_thinking_trajectory, deepseek_attempt}; this is a ${row.kind} row`);
    if (!tokenizer) throw new TrainingDataError(`${row.source}: --format paper needs the model's tokenizer.json`);
    const ids = tokenizer.encode(paperExtractionText(row.question, row.trajectory, row.attempt), { addSpecialTokens: false });
    return Int32Array.from(ids.slice(0, maxTokens));
  }
  return tokenizeRow(row, tokenizer, template, maxTokens, { ifNoAssistant: 'score-all' }).inputIds;
}

/** Rows in a JSONL (non-empty lines) or Parquet file (its metadata), without parsing them: for progress. */
export async function countRows(file: string): Promise<number> {
  if (await fileMagic(file) === 'PAR1') return Number((await parquetMetadataAsync(await asyncBufferFromFile(file))).num_rows);
  let count = 0;
  let inLine = false;
  for await (const chunk of createReadStream(file)) {
    for (const byte of chunk as Buffer) {
      if (byte === 10) {
        if (inLine) count++;
        inLine = false;
      } else if (byte !== 13 && byte !== 32 && byte !== 9) inLine = true;
    }
  }
  return count + (inLine ? 1 : 0);
}

export interface ExtractProgress {
  /** Rows of the input consumed (this run and earlier runs). */
  rows: number;
  totalRows: number;
  examples: number;
  tokens: number;
  /** Tokens per second in this run. */
  tokensPerSecond: number;
}

export interface ExtractOptions {
  model: Qwen2Model;
  tokenizer: Tokenizer | null;
  /** Chat template for the training rendering. */
  template: string;
  data: string;
  out: string;
  /** Recorded in index.json (and checked on resume). */
  modelDir: string;
  adapterDir: string;
  rendering?: StoreRendering;
  maxTokens?: number;
  /** First n up_proj neurons of each layer (the MLP baseline); 0 for none. */
  mlpNeurons?: number;
  /** A shard is written once it holds this many tokens. */
  shardTokens?: number;
  /** Stop after this many rows in total (for tests and partial stores). */
  limit?: number;
  onProgress?: (progress: ExtractProgress) => void;
  /** Checked between examples: return true to stop (what is written stays valid and resumable). */
  shouldStop?: () => boolean;
}

export const EXTRACT_DEFAULTS = { maxTokens: 2048, shardTokens: 1 << 16, mlpNeurons: 0 } as const;

/**
 * Adapter activations of one sequence: ids [T] -> acts [T, hooks] (raw A·x, columns in `hooks` order) and,
 * with mlpNeurons n > 0, mlp [T, L·n] (the first n up_proj outputs of each layer).
 */
export async function adapterActivations(
  model: Qwen2Model, ids: Int32Array, hooks: readonly string[], mlpNeurons = 0,
): Promise<{ acts: Float32Array; mlp: Float32Array | null }> {
  // The MLP baseline keeps only the first n columns of each up_proj output: sliced in the hook, so a whole
  // [T, I] output per layer is never kept.
  const mlpRecorded: Tensor[] = [];
  const mlpHooks: HookSpec = mlpNeurons > 0
    ? Array.from({ length: model.dims.layers }, (_, l) => [hookName.projectionOutput(l, 'up_proj'), (value: Tensor) => {
      mlpRecorded[l] = keep(detach(slice(value, -1, 0, mlpNeurons)));
    }] as const)
    : [];
  try {
    const { logits, cache } = withHooks(model, mlpHooks, () => runWithCache(model, ids, hooks, { lastPositionOnly: true }));
    logits.dispose();
    try {
      const missing = hooks.filter((name) => !cache.has(name));
      if (missing.length > 0) throw new Error(`extraction: no activation reached ${missing[0]} (is its adapter loaded?)`);
      const acts = await concatenatedValues(() => hooks.map((name) => unsqueeze(cache.get(name), -1))); // [1, T, hooks]
      const mlp = mlpNeurons > 0 ? await concatenatedValues(() => mlpRecorded) : null; // [1, T, L·n]
      return { acts, mlp };
    } finally {
      cache.dispose();
    }
  } finally {
    for (const t of mlpRecorded) t?.dispose();
  }
}

/** The values of tensors joined along their last axis. */
async function concatenatedValues(parts: () => Tensor[]): Promise<Float32Array> {
  const joined = tidy(() => cat(parts(), -1));
  try {
    return await joined.toFloat32Array();
  } finally {
    joined.dispose();
  }
}

/**
 * `rank1 extract` as a function: writes (or resumes) the store at options.out and returns its index.
 * The adapter hooks are those of the model's adapter, in the paper's order (7·layer + j).
 */
export async function extractActivations(options: ExtractOptions): Promise<StoreIndex> {
  const { model, tokenizer, template, data, out } = options;
  const rendering = options.rendering ?? 'training';
  const maxTokens = options.maxTokens ?? EXTRACT_DEFAULTS.maxTokens;
  const mlpNeurons = options.mlpNeurons ?? EXTRACT_DEFAULTS.mlpNeurons;
  if (!model.adapters) throw new Error('extract needs a rank-1 adapter loaded on the model (--adapter DIR)');
  if (mlpNeurons > model.dims.intermediate) throw new RangeError(`--mlp-neurons ${mlpNeurons} is more than the model's ${model.dims.intermediate} MLP neurons per layer`);
  const hooks = adapterHookNames(model.dims.layers).filter((name) => model.adapters!.adapters.has(name));
  const writer = await ActivationStoreWriter.open({
    dir: out,
    model: options.modelDir,
    adapter: options.adapterDir,
    hooks,
    mlpNeurons: mlpNeuronNames(mlpNeurons > 0 ? model.dims.layers : 0, mlpNeurons),
    data,
    rendering,
    maxTokens,
    shardTokens: options.shardTokens ?? EXTRACT_DEFAULTS.shardTokens,
  });
  // The store reads its own tokens back without the model folder (topk's contexts).
  const tokenizerFile = path.join(options.modelDir, 'tokenizer.json');
  await fs.copyFile(tokenizerFile, path.join(out, 'tokenizer.json')).catch(() => undefined);
  if (writer.complete) return writer.index;
  const totalRows = Math.min(await countRows(data), options.limit ?? Infinity);
  const started = Date.now();
  let tokensThisRun = 0;
  let row = -1;
  const report = () => options.onProgress?.({
    rows: Math.max(row + 1, writer.rowsDone), totalRows,
    examples: writer.index.examples, tokens: writer.index.tokens + tokensThisRun,
    tokensPerSecond: tokensThisRun / Math.max(1e-3, (Date.now() - started) / 1000),
  });
  report();
  let stoppedEarly = false;
  for await (const input of iterateTrainingRows(data)) {
    row++;
    if (row < writer.rowsDone) continue;
    if ((options.limit !== undefined && row >= options.limit) || options.shouldStop?.()) {
      stoppedEarly = true;
      break;
    }
    const ids = extractionIds(input, tokenizer, rendering, template, maxTokens);
    if (ids.length === 0) {
      writer.skipTo(row + 1);
      continue;
    }
    const bad = ids.findIndex((id) => id >= model.dims.vocab);
    if (bad >= 0) throw new TrainingDataError(`${input.source}: token id ${ids[bad]} is outside the model's vocabulary of ${model.dims.vocab}`);
    const { acts, mlp } = await adapterActivations(model, ids, hooks, mlpNeurons);
    await writer.add({ example: row, inputIds: ids, acts, mlp });
    tokensThisRun += ids.length;
    report();
  }
  if (stoppedEarly) {
    await writer.flush();
    return writer.index;
  }
  return writer.finish();
}
