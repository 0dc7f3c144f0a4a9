// `rank1 extract | ablate | topk`: the analysis commands, flags and display over the jobs in src/jobs (which
// `rank1 demo` runs too). Results go to files (and the ablation table to stdout); progress and notes to stderr.
import type { BackendName } from '../kernels/backend.ts';
import { initBackend } from '../tensor/engine.ts';
import { loadChatTemplate } from '../model/chat-template.ts';
import { loadPeftAdapter, loadQwen2Checkpoint } from '../model/load.ts';
import { loadTokenizer } from '../model/tokenizer.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import type { StoreRendering } from '../interp/activation-store.ts';
import { ABLATION_FILES } from '../interp/figures.ts';
import { ABLATE_DEFAULTS, mergeAblations, runAblation } from '../jobs/ablate.ts';
import { describeShard, isWhole, resolveShard, type Shard } from '../io/shard.ts';
import { EXTRACT_DEFAULTS, runExtract } from '../jobs/extract.ts';
import { TOPK_DEFAULTS, runTopk } from '../jobs/topk.ts';

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

/** --shard I/N, else the scheduler's shard (Slurm array task, Kubernetes Indexed Job with --shards N). */
function chooseShard(options: { shard?: string; shards?: number }): Shard {
  const { shard, source } = resolveShard(options);
  if (!isWhole(shard)) note(`${describeShard(shard)} (from ${source === '--shard' ? '--shard' : source === 'slurm' ? 'the Slurm array task' : 'the Kubernetes completion index'})`);
  return shard;
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
  shard?: string;
  shards?: number;
  backend: BackendOption;
  progress: boolean;
}

export async function extractCommand(options: ExtractCommandOptions): Promise<void> {
  const rendering = parseFormat(options.format);
  const shard = chooseShard(options);
  const { model, tokenizer, template } = await loadModelWithAdapter(options);
  const progress = progressDisplay({
    bar: 'rows {value}/{total} |{bar}| {tokens} tokens | {tps} tok/s | ETA {eta_formatted}',
    line: (rows, totalRows, values) => `rows ${rows}/${totalRows}  ${values.tokens} tokens  ${values.tps} tok/s`,
    enabled: options.progress,
  });
  const interrupt = stopOnCtrlC('writing what is done as a shard, then stopping (rerun the same command to resume)');
  try {
    const index = await runExtract({
      model, tokenizer, template, data: options.data, out: options.out, modelDir: options.model, adapterDir: options.adapter,
      rendering, maxTokens: options.maxTokens, mlpNeurons: options.mlpNeurons, shardTokens: options.shardTokens, limit: options.limit, shard,
    }, {
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
  lossChunk?: number;
  shard?: string;
  shards?: number;
  backend: BackendOption;
  progress: boolean;
}

/** `rank1 ablate --merge DIR… --out OUT`: the shards' ablation.json joined into the unsharded one. */
export async function ablateMergeCommand(options: { merge: string[]; out: string }): Promise<void> {
  const { result, table } = await mergeAblations(options.out, options.merge);
  process.stdout.write(table);
  note(`merged ${options.merge.length} shard(s), ${result.examples.length} sequences: wrote ${options.out}/${Object.values(ABLATION_FILES).join(', ')}`);
}

export function parseExampleCount(text: string): number | 'all' {
  if (text === 'all') return 'all';
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--examples must be a positive integer or "all", got "${text}"`);
  return n;
}

export async function ablateCommand(options: AblateCommandOptions & { merge?: string[] }): Promise<void> {
  if (options.merge !== undefined && options.merge.length > 0) {
    await ablateMergeCommand({ merge: options.merge, out: options.out });
    return;
  }
  if (!options.model || !options.adapter || !options.data) throw new Error('ablate needs --model, --adapter and --data (or --merge DIR… to join shards)');
  const rendering = parseFormat(options.format);
  const count = parseExampleCount(options.examples);
  const shard = chooseShard(options);
  const { model, tokenizer, template } = await loadModelWithAdapter(options);
  const progress = progressDisplay({
    bar: 'forwards {value}/{total} |{bar}| sequence {seq}/{seqs} | ETA {eta_formatted}',
    line: (forwards, _totalForwards, values) => `sequence ${values.seq}/${values.seqs}  forwards ${forwards}`,
    enabled: options.progress,
  });
  const { table, seconds } = await runAblation({
    model, tokenizer, template, data: options.data, out: options.out, rendering, examples: count, seed: options.seed,
    maxTokens: options.maxTokens, minTokens: options.minTokens, block: options.block, batch: options.batch, lossChunk: options.lossChunk,
    provenance: { model: options.model, adapter: options.adapter }, shard,
  }, {
    onPlan: (plan) => note(`ablating ${plan.groups} groups over ${plan.sequences} sequences (${plan.tokens} tokens)`),
    onProgress: (p) => progress.update(p.forwards, p.totalForwards, { seq: p.examples, seqs: p.totalExamples }, p.examples === p.totalExamples),
  });
  progress.stop();
  process.stdout.write(table);
  note(`wrote ${options.out}/${Object.values(ABLATION_FILES).join(', ')} (${seconds.toFixed(1)} s)`);
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
  const progress = progressDisplay({ bar: 'shards {value}/{total} |{bar}| {tokens} tokens', enabled: options.progress });
  const { features, file, tokens, decoded } = await runTopk({
    store: options.store, out: options.out, k: options.k, context: options.context, minAbs: options.minAbs, tokenizer: options.model,
  }, {
    onProgress: (p) => progress.update(p.shards, p.totalShards, { tokens: p.tokens }),
  });
  progress.stop();
  if (!decoded) note('warning: no tokenizer.json in the store or its model folder: context_tokens are empty');
  const active = features.filter((f) => f.active_count > 0).length;
  note(`wrote ${file}: ${features.length} features (${active} active) over ${tokens} tokens`);
}

export const INTERP_DEFAULTS = {
  maxTokens: EXTRACT_DEFAULTS.maxTokens,
  shardTokens: EXTRACT_DEFAULTS.shardTokens,
  examples: String(ABLATE_DEFAULTS.examples),
  seed: ABLATE_DEFAULTS.seed,
  minTokens: ABLATE_DEFAULTS.minTokens,
  block: ABLATE_DEFAULTS.block,
  k: TOPK_DEFAULTS.k,
  context: TOPK_DEFAULTS.context,
  minAbs: TOPK_DEFAULTS.minAbs,
} as const;
