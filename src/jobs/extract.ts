// The extraction job, as `rank1 extract` and `rank1 demo` both run it: run the model with its rank-1 adapter
// over a data set and write every adapter scalar A·x of every token (and optionally the first n up_proj
// neurons of each layer, the paper's MLP baseline) to an activation store (activation-store.ts). Streams: one
// row, one forward and one shard in memory at a time. Resumable: rerunning with the same options continues
// after the last shard written.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { adapterHookNames } from '../model/hooks.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import { iterateTrainingRows, TrainingDataError } from '../train/data.ts';
import { mlpNeuronNames, type StoreIndex, type StoreRendering } from '../interp/activation-store.ts';
import { ActivationStoreWriter } from '../interp/activation-store-writer.ts';
import { adapterActivations, countRows, extractionIds } from '../interp/extract.ts';
import { isWhole, shardRecord, type Shard } from '../io/shard.ts';

export interface ExtractProgress {
  /** Rows of the input consumed (this run and earlier runs). */
  rows: number;
  totalRows: number;
  examples: number;
  tokens: number;
  /** Tokens per second in this run. */
  tokensPerSecond: number;
}

export interface ExtractJobOptions {
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
  /** Only this shard's rows (io/shard.ts) of the first `limit` rows; the store records them, and
   *  `rank1 store merge` joins the shards' stores into the unsharded one. */
  shard?: Shard;
}

export interface ExtractJobProgress {
  onProgress?: (progress: ExtractProgress) => void;
  /** Checked between examples: return true to stop (what is written stays valid and resumable). */
  shouldStop?: () => boolean;
}

export const EXTRACT_DEFAULTS = { maxTokens: 2048, shardTokens: 1 << 16, mlpNeurons: 0 } as const;

/**
 * Writes (or resumes) the store at options.out and returns its index. The adapter hooks are those of the
 * model's adapter, in the paper's order (7·layer + j).
 */
export async function runExtract(options: ExtractJobOptions, progress: ExtractJobProgress = {}): Promise<StoreIndex> {
  const { model, tokenizer, template, data, out } = options;
  const rendering = options.rendering ?? 'training';
  const maxTokens = options.maxTokens ?? EXTRACT_DEFAULTS.maxTokens;
  const mlpNeurons = options.mlpNeurons ?? EXTRACT_DEFAULTS.mlpNeurons;
  if (!model.adapters) throw new Error('extract needs a rank-1 adapter loaded on the model (--adapter DIR)');
  if (mlpNeurons > model.dims.intermediate) throw new RangeError(`--mlp-neurons ${mlpNeurons} is more than the model's ${model.dims.intermediate} MLP neurons per layer`);
  const hooks = adapterHookNames(model.dims.layers).filter((name) => model.adapters!.adapters.has(name));
  const sharded = options.shard !== undefined && !isWhole(options.shard);
  // A shard's rows come from the row count (of the first `limit` rows), so that every shard agrees on them.
  const rowsInData = Math.min(await countRows(data), options.limit ?? Infinity);
  const shard = sharded ? shardRecord(rowsInData, options.shard!) : undefined;
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
    ...(shard ? { shard } : {}),
  });
  // The store reads its own tokens back without the model folder (topk's contexts).
  const tokenizerFile = path.join(options.modelDir, 'tokenizer.json');
  await fs.copyFile(tokenizerFile, path.join(out, 'tokenizer.json')).catch(() => undefined);
  if (writer.complete) return writer.index;
  const totalRows = shard ? shard.to : rowsInData;
  const firstRow = shard ? shard.from : 0;
  const started = Date.now();
  // index.tokens grows as shards are written during this run: count from where the run started.
  const tokensBefore = writer.index.tokens;
  let tokensThisRun = 0;
  let row = -1;
  const report = () => progress.onProgress?.({
    rows: Math.max(row + 1, writer.rowsDone, firstRow) - firstRow, totalRows: totalRows - firstRow,
    examples: writer.index.examples, tokens: tokensBefore + tokensThisRun,
    tokensPerSecond: tokensThisRun / Math.max(1e-3, (Date.now() - started) / 1000),
  });
  report();
  let stoppedEarly = false;
  for await (const input of iterateTrainingRows(data)) {
    row++;
    if (row < writer.rowsDone || row < firstRow) continue;
    if (shard && row >= shard.to) break;
    if ((options.limit !== undefined && row >= options.limit) || progress.shouldStop?.()) {
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
  if (shard) writer.skipTo(shard.to);
  return writer.finish();
}
