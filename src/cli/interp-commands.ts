// `rank1 extract | ablate | topk`: the analysis commands, thin over src/interp. Results go to files (and the
// ablation table to stdout); progress and notes to stderr.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { BackendName } from '../kernels/backend.ts';
import { initBackend } from '../tensor/engine.ts';
import { loadChatTemplate } from '../model/chat-template.ts';
import { loadPeftAdapter, loadQwen2Checkpoint } from '../model/load.ts';
import { loadTokenizer } from '../model/tokenizer.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import { iterateTrainingRows } from '../train/data.ts';
import { ActivationStore, type StoreRendering } from '../interp/activation-store.ts';
import { EXTRACT_DEFAULTS, extractActivations, extractionIds } from '../interp/extract.ts';
import { ablationGroups, ablationSweep, chooseExamples, type AblationExample } from '../interp/ablate.ts';
import { writeAblationOutputs } from '../interp/figures.ts';
import { TOPK_DEFAULTS, topActivations } from '../interp/topk.ts';
import { writeFeaturesJsonl } from '../interp/features-file.ts';

import { stopOnCtrlC } from './interrupt.ts';
import { note, progressDisplay } from './io.ts';

type BackendOption = BackendName | 'auto';

async function loadModelWithAdapter(options: { model: string; adapter: string; backend: BackendOption }): Promise<{ model: Qwen2Model; tokenizer: Tokenizer | null; template: string }> {
  const choice = await initBackend(options.backend);
  note(`backend: ${choice.reason}`);
  const { model, warnings } = await loadQwen2Checkpoint(options.model, choice.backend);
  for (const warning of warnings) note(`warning: ${warning}`);
  await loadPeftAdapter(options.adapter, model);
  const tokenizer = await loadTokenizer(options.model);
  const template = await loadChatTemplate(options.model);
  return { model, tokenizer, template };
}

function parseFormat(format: string | undefined): StoreRendering {
  if (format === undefined || format === 'training') return 'training';
  if (format === 'paper') return 'paper';
  throw new Error(`--format must be "training" (rank1 train's rendering) or "paper" (the paper's extraction text), got "${format}"`);
}

// ---- extract --------------------------------------------------------------------------------------------

export interface ExtractCommandOptions {
  model: string;
  adapter: string;
  data: string;
  out: string;
  format?: string;
  maxTokens: number;
  mlpNeurons: number;
  shardTokens: number;
  limit?: number;
  backend: BackendOption;
  progress: boolean;
}

export async function extractCommand(options: ExtractCommandOptions): Promise<void> {
  const rendering = parseFormat(options.format);
  const { model, tokenizer, template } = await loadModelWithAdapter(options);
  const progress = progressDisplay({
    bar: 'rows {value}/{total} |{bar}| {tokens} tokens | {tps} tok/s | ETA {eta_formatted}',
    line: (rows, totalRows, values) => `rows ${rows}/${totalRows}  ${values.tokens} tokens  ${values.tps} tok/s`,
    enabled: options.progress,
  });
  const interrupt = stopOnCtrlC('writing what is done as a shard, then stopping (rerun the same command to resume)');
  try {
    const index = await extractActivations({
      model, tokenizer, template, data: options.data, out: options.out, modelDir: options.model, adapterDir: options.adapter,
      rendering, maxTokens: options.maxTokens, mlpNeurons: options.mlpNeurons, shardTokens: options.shardTokens, limit: options.limit,
      shouldStop: interrupt.requested,
      onProgress: (p) => progress.update(p.rows, p.totalRows, { tokens: p.tokens, tps: p.tokensPerSecond.toFixed(0) }),
    });
    progress.stop();
    note(`${index.complete ? 'store complete' : 'store partial (rerun the same command to continue)'}: ${options.out} — ${index.examples} examples, `
      + `${index.tokens} tokens, ${index.hooks.length} adapter hooks${index.mlp_neurons.length ? `, ${index.mlp_neurons.length} MLP neurons` : ''}, ${index.shards.length} shard(s)`);
  } finally {
    progress.stop();
    interrupt.dispose();
  }
}

// ---- ablate ---------------------------------------------------------------------------------------------

export interface AblateCommandOptions {
  model: string;
  adapter: string;
  data: string;
  out: string;
  format?: string;
  examples: string;
  seed: number;
  maxTokens: number;
  minTokens: number;
  block: number;
  batch?: number;
  backend: BackendOption;
  progress: boolean;
}

export function parseExampleCount(text: string): number | 'all' {
  if (text === 'all') return 'all';
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--examples must be a positive integer or "all", got "${text}"`);
  return n;
}

export async function ablateCommand(options: AblateCommandOptions): Promise<void> {
  const rendering = parseFormat(options.format);
  const count = parseExampleCount(options.examples);
  const { model, tokenizer, template } = await loadModelWithAdapter(options);
  // Lengths of every row (after truncation), then the draw; only the drawn rows' ids are kept.
  const lengths: { example: number; tokens: number }[] = [];
  let row = 0;
  for await (const input of iterateTrainingRows(options.data)) {
    lengths.push({ example: row++, tokens: extractionIds(input, tokenizer, rendering, template, options.maxTokens).length });
  }
  const chosen = new Set(chooseExamples(lengths, count, options.seed, options.minTokens));
  const examples: AblationExample[] = [];
  row = 0;
  for await (const input of iterateTrainingRows(options.data)) {
    if (chosen.has(row)) examples.push({ example: row, inputIds: extractionIds(input, tokenizer, rendering, template, options.maxTokens) });
    row++;
  }
  const groups = ablationGroups(model.dims.layers, [...model.adapters!.adapters.keys()], options.block);
  note(`ablating ${groups.length} groups over ${examples.length} sequences (${examples.reduce((n, e) => n + e.inputIds.length, 0)} tokens)`);
  const progress = progressDisplay({
    bar: 'forwards {value}/{total} |{bar}| sequence {seq}/{seqs} | ETA {eta_formatted}',
    line: (forwards, _totalForwards, values) => `sequence ${values.seq}/${values.seqs}  forwards ${forwards}`,
    enabled: options.progress,
  });
  const started = Date.now();
  const result = await ablationSweep(model, examples, groups, {
    batch: options.batch,
    onProgress: (p) => progress.update(p.forwards, p.totalForwards, { seq: p.examples, seqs: p.totalExamples }, p.examples === p.totalExamples),
  });
  progress.stop();
  const seconds = (Date.now() - started) / 1000;
  const table = await writeAblationOutputs(options.out, result, {
    model: options.model, adapter: options.adapter, data: options.data, format: rendering, seed: options.seed, max_tokens: options.maxTokens, min_tokens: options.minTokens, seconds,
  });
  process.stdout.write(table);
  note(`wrote ${options.out}/ablation.json, kl-by-layer.svg, adapter-heatmap.svg, table2.md (${seconds.toFixed(1)} s)`);
}

// ---- topk -----------------------------------------------------------------------------------------------

export interface TopkCommandOptions {
  store: string;
  out: string;
  k: number;
  context: number;
  minAbs: number;
  model?: string;
  progress: boolean;
}

export async function topkCommand(options: TopkCommandOptions): Promise<void> {
  const store = await ActivationStore.open(options.store);
  // The store keeps a copy of the model's tokenizer; --model overrides it.
  const tokenizer = await loadTokenizer(options.model ?? options.store).catch(() => null)
    ?? await loadTokenizer(store.index.model).catch(() => null);
  if (!tokenizer) note('warning: no tokenizer.json in the store or its model folder: context_tokens will be empty');
  const progress = progressDisplay({ bar: 'shards {value}/{total} |{bar}| {tokens} tokens', enabled: options.progress });
  const features = await topActivations(store, {
    k: options.k, context: options.context, minAbs: options.minAbs, tokenizer,
    onProgress: (p) => progress.update(p.shards, p.totalShards, { tokens: p.tokens }),
  });
  progress.stop();
  await fs.mkdir(options.out, { recursive: true });
  await writeFeaturesJsonl(path.join(options.out, 'features.jsonl'), features);
  const active = features.filter((f) => f.active_count > 0).length;
  note(`wrote ${path.join(options.out, 'features.jsonl')}: ${features.length} features (${active} active) over ${store.index.tokens} tokens`);
}

export const INTERP_DEFAULTS = {
  maxTokens: EXTRACT_DEFAULTS.maxTokens,
  shardTokens: EXTRACT_DEFAULTS.shardTokens,
  examples: '16',
  seed: 42,
  minTokens: 100,
  block: 8,
  k: TOPK_DEFAULTS.k,
  context: TOPK_DEFAULTS.context,
  minAbs: TOPK_DEFAULTS.minAbs,
} as const;
