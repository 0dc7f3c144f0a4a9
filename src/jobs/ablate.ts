// The ablation job, as `rank1 ablate` and `rank1 demo` both run it: a model with its rank-1 adapter and a data
// file in; ablation.json, the two figures and Table 2 (table2.md) out.
//   lengths of every row → draw (seed) → the drawn rows' ids → the paper's groups → sweep → files
// The rows are read twice (lengths, then the drawn rows) so that only the drawn sequences are kept in memory.
//
// Sharded (`--shard I/N`, io/shard.ts): every shard makes the same draw and sweeps its contiguous share of the
// drawn sequences. ablation.json keeps every per-sequence number (KL, CE, the full model's CE) and the sweep
// takes its means from them (ablationFromSequences) — so the means of merged shards (`rank1 ablate --merge`,
// mergeAblations) are the unsharded means to the last bit.
import type { Qwen2Model } from '../model/qwen2.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import { iterateTrainingRows } from '../train/data.ts';
import type { StoreRendering } from '../interp/activation-store.ts';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import {
  ablationFromSequences, ablationGroups, ablationSweep, chooseExamples, sequencesOf, type AblationExample, type AblationOptions, type AblationResult,
} from '../interp/ablate.ts';
import { extractionIds } from '../interp/extract.ts';
import { ABLATION_FILES, writeAblationOutputs } from '../interp/figures.ts';
import { describeShard, isWhole, orderShards, shardRecord, shardSlice, ShardError, type Shard, type ShardRecord } from '../io/shard.ts';
import { EXTRACT_DEFAULTS } from './extract.ts';

export const ABLATE_DEFAULTS = {
  /** Sequences drawn. */
  examples: 16,
  seed: 42,
  maxTokens: EXTRACT_DEFAULTS.maxTokens,
  /** Sequences of at most this many tokens are not drawn. */
  minTokens: 100,
  /** Layers per block group. */
  block: 8,
  rendering: 'training',
} as const;

export interface AblationJobOptions {
  /** The model with its rank-1 adapter loaded. */
  model: Qwen2Model;
  tokenizer: Tokenizer | null;
  /** Chat template of the training rendering. */
  template: string;
  data: string;
  out: string;
  rendering?: StoreRendering;
  /** Sequences drawn, or all of them. */
  examples?: number | 'all';
  seed?: number;
  maxTokens?: number;
  minTokens?: number;
  block?: number;
  /** Ablated variants per forward (default: defaultAblationBatch — the variants' activations, about T · (6H + 3I) f32 each, kept near 512 MB, at most 16). */
  batch?: number;
  /** Rows per chunk of the KL and cross-entropy, computed from the hidden states without [T, V] logits (default: defaultLossChunkRows(V)). */
  lossChunk?: number;
  /** Recorded first in ablation.json: the model and adapter folders (the demo's are its own). */
  provenance?: { model: string; adapter: string };
  /** Record the seconds the sweep took in ablation.json (default true; the demo leaves it out, so its file depends on the seed only). */
  recordSeconds?: boolean;
  /** Only this shard's share of the drawn sequences (merge the shards' folders with mergeAblations). */
  shard?: Shard;
}

export interface AblationJobProgress {
  /** The draw is made: groups, sequences and their tokens, before the sweep starts. */
  onPlan?: (plan: { groups: number; sequences: number; tokens: number }) => void;
  onProgress?: AblationOptions['onProgress'];
}

export interface AblationJobResult {
  result: AblationResult;
  /** Table 2 as Markdown (table2.md). */
  table: string;
  seconds: number;
}

export async function runAblation(options: AblationJobOptions, progress: AblationJobProgress = {}): Promise<AblationJobResult> {
  const { model, tokenizer, template, data } = options;
  const rendering = options.rendering ?? ABLATE_DEFAULTS.rendering;
  const maxTokens = options.maxTokens ?? ABLATE_DEFAULTS.maxTokens;
  const minTokens = options.minTokens ?? ABLATE_DEFAULTS.minTokens;
  const seed = options.seed ?? ABLATE_DEFAULTS.seed;
  if (!model.adapters) throw new Error('ablation needs a rank-1 adapter loaded on the model (--adapter DIR)');
  const idsOf = (input: Parameters<typeof extractionIds>[0]) => extractionIds(input, tokenizer, rendering, template, maxTokens);
  const lengths: { example: number; tokens: number }[] = [];
  let row = 0;
  for await (const input of iterateTrainingRows(data)) lengths.push({ example: row++, tokens: idsOf(input).length });
  const drawn = chooseExamples(lengths, options.examples ?? ABLATE_DEFAULTS.examples, seed, minTokens);
  const shard = options.shard !== undefined && !isWhole(options.shard) ? shardRecord(drawn.length, options.shard) : undefined;
  const mine = shard ? shardSlice(drawn, options.shard!) : drawn;
  if (mine.length === 0) throw new ShardError(`${describeShard(options.shard!)} holds none of the ${drawn.length} sequences drawn: use at most ${drawn.length} shards`);
  const chosen = new Set(mine);
  const examples: AblationExample[] = [];
  row = 0;
  for await (const input of iterateTrainingRows(data)) {
    if (chosen.has(row)) examples.push({ example: row, inputIds: idsOf(input) });
    row++;
  }
  const groups = ablationGroups(model.dims.layers, [...model.adapters.adapters.keys()], options.block ?? ABLATE_DEFAULTS.block);
  progress.onPlan?.({ groups: groups.length, sequences: examples.length, tokens: examples.reduce((n, e) => n + e.inputIds.length, 0) });
  const started = Date.now();
  const result = await ablationSweep(model, examples, groups, { batch: options.batch, lossChunk: options.lossChunk, onProgress: progress.onProgress });
  const seconds = (Date.now() - started) / 1000;
  const table = await writeAblationOutputs(options.out, result, {
    ...(options.provenance ? { model: options.provenance.model, adapter: options.provenance.adapter } : {}),
    data, format: rendering, seed, max_tokens: maxTokens, min_tokens: minTokens,
    ...(options.recordSeconds ?? true ? { seconds } : {}),
    ...(shard ? { shard } : {}),
  });
  return { result, table, seconds };
}

/** The settings recorded in ablation.json that make two shards parts of one ablation. */
const ABLATION_IDENTITY = ['model', 'adapter', 'data', 'format', 'seed', 'max_tokens', 'min_tokens'] as const;

/**
 * `rank1 ablate --merge`: the ablation.json of each shard folder (any order) joined into the unsharded one
 * at `out` (with its figures and Table 2): the sequences concatenated in shard order, every mean recomputed
 * from the per-sequence values as the unsharded sweep computes it, seconds summed. Refuses folders of another
 * model, adapter, data or draw (naming the field), other groups, unsharded results, gaps and overlaps.
 */
export async function mergeAblations(out: string, dirs: readonly string[]): Promise<AblationJobResult> {
  type File = AblationResult & Record<string, unknown> & { shard?: ShardRecord; seconds?: number };
  const parts = await Promise.all(dirs.map(async (dir) => {
    const file = path.join(dir, ABLATION_FILES.result);
    const json = JSON.parse(await fs.readFile(file, 'utf8')) as File;
    if (!Array.isArray(json.full_ce_by_example) || !Array.isArray(json.tokens_by_example) || json.groups.some((g) => !Array.isArray(g.ce_by_example))) {
      throw new Error(`${file} has no per-sequence values (full_ce_by_example, ce_by_example): made by an older rank1 ablate; rerun its shard`);
    }
    return { name: file, json };
  }));
  const first = parts[0];
  if (!first) throw new Error('ablate --merge needs at least one folder');
  for (const part of parts.slice(1)) {
    for (const field of ABLATION_IDENTITY) {
      if (JSON.stringify(part.json[field]) !== JSON.stringify(first.json[field])) {
        throw new Error(`${part.name} is not a shard of the same ablation as ${first.name}: its ${field} is ${JSON.stringify(part.json[field])}, not ${JSON.stringify(first.json[field])}`);
      }
    }
    const names = (j: File) => j.groups.map((g) => g.name).join('\n');
    if (names(part.json) !== names(first.json)) throw new Error(`${part.name} ablates other groups than ${first.name} (another --block or adapter?)`);
  }
  let ordered: File[];
  try {
    ordered = orderShards(parts.map((p) => ({ name: p.name, record: p.json.shard, value: p.json })));
  } catch (error) {
    if (error instanceof ShardError) throw new ShardError(`ablate --merge: ${error.message}`);
    throw error;
  }
  const groups = first.json.groups.map(({ name, kind, adapters }) => ({ name, kind, adapters }));
  const result = ablationFromSequences(groups, ordered.flatMap(sequencesOf));
  const hasSeconds = ordered.every((j) => typeof j.seconds === 'number');
  const seconds = ordered.reduce((n, j) => n + (j.seconds ?? 0), 0);
  const metadata: Record<string, unknown> = {};
  for (const field of ['model', 'adapter', 'data', 'format', 'seed', 'max_tokens', 'min_tokens'] as const) if (field in first.json) metadata[field] = first.json[field];
  if (hasSeconds) metadata['seconds'] = seconds;
  const table = await writeAblationOutputs(out, result, metadata);
  return { result, table, seconds };
}
