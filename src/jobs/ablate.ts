// The ablation job, as `rank1 ablate` and `rank1 demo` both run it: a model with its rank-1 adapter and a data
// file in; ablation.json, the two figures and Table 2 (table2.md) out.
//   lengths of every row → draw (seed) → the drawn rows' ids → the paper's groups → sweep → files
// The rows are read twice (lengths, then the drawn rows) so that only the drawn sequences are kept in memory.
import type { Qwen2Model } from '../model/qwen2.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import { iterateTrainingRows } from '../train/data.ts';
import type { StoreRendering } from '../interp/activation-store.ts';
import { ablationGroups, ablationSweep, chooseExamples, type AblationExample, type AblationOptions, type AblationResult } from '../interp/ablate.ts';
import { extractionIds } from '../interp/extract.ts';
import { writeAblationOutputs } from '../interp/figures.ts';
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
  /** Ablated variants per forward (default: fit ~512 MB of logits). */
  batch?: number;
  /** Recorded first in ablation.json: the model and adapter folders (the demo's are its own). */
  provenance?: { model: string; adapter: string };
  /** Record the seconds the sweep took in ablation.json (default true; the demo leaves it out, so its file depends on the seed only). */
  recordSeconds?: boolean;
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
  const chosen = new Set(chooseExamples(lengths, options.examples ?? ABLATE_DEFAULTS.examples, seed, minTokens));
  const examples: AblationExample[] = [];
  row = 0;
  for await (const input of iterateTrainingRows(data)) {
    if (chosen.has(row)) examples.push({ example: row, inputIds: idsOf(input) });
    row++;
  }
  const groups = ablationGroups(model.dims.layers, [...model.adapters.adapters.keys()], options.block ?? ABLATE_DEFAULTS.block);
  progress.onPlan?.({ groups: groups.length, sequences: examples.length, tokens: examples.reduce((n, e) => n + e.inputIds.length, 0) });
  const started = Date.now();
  const result = await ablationSweep(model, examples, groups, { batch: options.batch, onProgress: progress.onProgress });
  const seconds = (Date.now() - started) / 1000;
  const table = await writeAblationOutputs(options.out, result, {
    ...(options.provenance ? { model: options.provenance.model, adapter: options.provenance.adapter } : {}),
    data, format: rendering, seed, max_tokens: maxTokens, min_tokens: minTokens,
    ...(options.recordSeconds ?? true ? { seconds } : {}),
  });
  return { result, table, seconds };
}
