// Autointerpretation (the paper's labelling, and delphi-style scoring on top), composed from its stages:
//   1. explainer (autointerp-explainer.ts): each feature's max-activating examples → an explanation of ≤ 10
//      words and a class (0 specific, 1 broad, 2 polysemantic);
//   2. categories (autointerp-categories.ts): 5–8 functional categories proposed from all explanations, then
//      one assigned to each feature;
//   3. scorers (autointerp-scorers.ts), optional: detection and fuzzing, as balanced accuracy.
// Every call goes through CachedChatClient (cache, retries, bounded concurrency); every per-feature stage is
// resumable (autointerp-stage.ts). An answer that is not the JSON asked for is asked again once, then recorded
// as an error row; nothing crashes the run.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { writeFileAtomic } from '../io/atomic.ts';
import { writeJsonl } from '../io/jsonl.ts';
import type { FeatureTopExamples } from './topk.ts';
import type { CachedChatClient } from './llm-client.ts';
import { INTERPRET_FILES, type Category, type InterpretProgress, type InterpretResult, type ScoreMethod, type ScoreRow } from './autointerp-types.ts';
import { renderPrompt, type Prompts } from './autointerp-prompts.ts';
import type { AskerOptions } from './autointerp-stage.ts';
import { explainFeatures } from './autointerp-explainer.ts';
import { assignCategories, proposeCategories } from './autointerp-categories.ts';
import { SCORERS, scoreExplanations } from './autointerp-scorers.ts';

/** The settings' defaults, shared by `rank1 interpret`, the demo and this pipeline. */
export const AUTOINTERP_DEFAULTS = {
  show: 20,
  scoreExamples: 10,
  categorySample: 200,
  minCategories: 5,
  maxCategories: 8,
  seed: 42,
  jsonSchema: true,
} as const;

export interface InterpretOptions {
  client: CachedChatClient;
  prompts: Prompts;
  out: string;
  /** Examples shown to the explainer per feature (default 20). */
  show?: number;
  score?: readonly ScoreMethod[];
  /** Activating (and as many non-activating) excerpts per scored feature (default 10). */
  scoreExamples?: number;
  /** Tokens shown either side of the activating token in every excerpt (default: the whole stored context). */
  window?: number;
  /** Explanations (drawn with the seed) the category step sees, so its prompt fits a context (default 200). */
  categorySample?: number;
  minCategories?: number;
  maxCategories?: number;
  seed?: number;
  /**
   * Send each step's JSON schema as `response_format` (structured outputs: OpenAI, vLLM, llama.cpp, rank1
   * serve), so even a weak model answers in shape (default true).
   */
  jsonSchema?: boolean;
  onProgress?: (progress: InterpretProgress) => void;
  /** One line per call, for the run log. */
  onCall?: (entry: Record<string, unknown>) => void;
}

/**
 * The hash partial files are tagged with: rows written with other prompts, model, sampling, shown examples,
 * structured outputs, seed or scoring excerpts are asked again. Its field names are part of the hash (a
 * rename would orphan every partial file already written).
 */
function hashSettings(options: InterpretOptions): string {
  const { prompts, client } = options;
  const { model, temperature, maxTokens } = client.options;
  return createHash('sha256').update(JSON.stringify({
    prompts, model, temperature, maxTokens,
    show: options.show ?? AUTOINTERP_DEFAULTS.show,
    window: options.window ?? null,
    structured: options.jsonSchema ?? AUTOINTERP_DEFAULTS.jsonSchema,
    seed: options.seed ?? AUTOINTERP_DEFAULTS.seed,
    scoreExamples: options.scoreExamples ?? AUTOINTERP_DEFAULTS.scoreExamples,
  })).digest('hex').slice(0, 16);
}

/**
 * Explains, categorises and (optionally) scores `features`, writing into `out`: explanations.jsonl,
 * categories.json, scores.jsonl (when scored) and the stages' partial files.
 */
export async function interpretFeatures(features: readonly FeatureTopExamples[], options: InterpretOptions): Promise<InterpretResult> {
  const { prompts, out } = options;
  const show = options.show ?? AUTOINTERP_DEFAULTS.show;
  const seed = options.seed ?? AUTOINTERP_DEFAULTS.seed;
  const window = options.window ?? Infinity;
  const settingsHash = hashSettings(options);
  const asker: AskerOptions = {
    client: options.client,
    system: { role: 'system', content: renderPrompt(prompts.system, {}) },
    structuredOutputs: options.jsonSchema ?? AUTOINTERP_DEFAULTS.jsonSchema,
    log: options.onCall ?? (() => undefined),
  };
  await fs.mkdir(out, { recursive: true });
  const usable = features.filter((f) => f.examples.length > 0);

  const explanations = await explainFeatures(usable, { asker, prompt: prompts.explain, show, window, out, settingsHash }, options.onProgress);
  const explained = explanations.filter((r) => r.explanation !== null);

  let categories: Category[] = [];
  let categoriesError: string | null = null;
  if (explained.length > 0) {
    ({ categories, error: categoriesError } = await proposeCategories(explained, {
      asker, prompt: prompts.categories, seed,
      sample: options.categorySample ?? AUTOINTERP_DEFAULTS.categorySample,
      minCategories: options.minCategories ?? AUTOINTERP_DEFAULTS.minCategories,
      maxCategories: options.maxCategories ?? AUTOINTERP_DEFAULTS.maxCategories,
    }, options.onProgress));
  }
  await writeFileAtomic(path.join(out, INTERPRET_FILES.categories), `${JSON.stringify({ categories, error: categoriesError }, null, 2)}\n`);
  if (categories.length > 0) await assignCategories(explained, categories, { asker, prompt: prompts.assign, out, settingsHash }, options.onProgress);
  await writeJsonl(path.join(out, INTERPRET_FILES.explanations), explanations.map(({ feature, kind, explanation, class: cls, category, error }) => ({ feature, kind, explanation, class: cls, category, ...(error ? { error } : {}) })));

  const scores: ScoreRow[] = [];
  for (const method of options.score ?? []) {
    scores.push(...await scoreExplanations(SCORERS[method], explained, {
      asker, prompts, all: usable, count: options.scoreExamples ?? AUTOINTERP_DEFAULTS.scoreExamples, show, window, seed, out, settingsHash,
    }, options.onProgress));
  }
  if (scores.length) await writeJsonl(path.join(out, 'scores.jsonl'), scores);
  return { explanations, categories, scores };
}
