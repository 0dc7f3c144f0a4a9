// Scoring explanations (delphi's scorers): each scorer prepares its own excerpts from a feature's examples,
// asks whether the explanation picks the true ones, and scores the answer as balanced accuracy.
//   detection: a shuffled mix of activating and non-activating excerpts — which fire?
//   fuzzing:   activating excerpts, half marked at the firing token, half elsewhere — which marks are right?
// Resumable, one row per feature in <method>.partial.jsonl.
import * as path from 'node:path';
import { z } from 'zod';
import { Random } from '../tensor/random.ts';
import type { FeatureTopExamples, TopExample } from './topk.ts';
import type { Confusion, ExplanationRow, ScoreMethod, ScoreRow } from './autointerp-types.ts';
import { contextText, renderPrompt, type Prompts } from './autointerp-prompts.ts';
import { askJson, objectSchema, runResumableStage, seedOf, type AnswerShape, type AskerOptions, type ProgressReporter } from './autointerp-stage.ts';

/** What a scorer shows: excerpts (as text), and for each whether it is a true case. */
export interface ScoringItems {
  items: string[];
  truth: boolean[];
}

/** What a scorer draws its excerpts from. */
export interface ScoringContext {
  /** Every feature of the run (detection's negatives are drawn from the others). */
  all: readonly FeatureTopExamples[];
  /** Activating excerpts per feature. */
  count: number;
  /** Examples the explainer saw (held-out ones are preferred). */
  show: number;
  /** Tokens shown either side of the activating token. */
  window: number;
  rng: Random;
}

/** One scorer: its excerpts, the answer's shape for n excerpts, and the answer's score. */
export interface Scorer {
  method: ScoreMethod;
  items(feature: FeatureTopExamples, context: ScoringContext): ScoringItems;
  schema(n: number): AnswerShape<Record<string, number[]>>;
  score(truth: readonly boolean[], answer: Record<string, number[]>): Confusion;
}

/** Balanced accuracy (TPR + TNR) / 2 of answered indices against the truth. */
export function balancedAccuracy(truth: readonly boolean[], answered: ReadonlySet<number>): Confusion {
  let tp = 0, fp = 0, tn = 0, fn = 0;
  truth.forEach((positive, i) => {
    const said = answered.has(i);
    if (positive && said) tp++;
    else if (positive) fn++;
    else if (said) fp++;
    else tn++;
  });
  const positives = tp + fn;
  const negatives = tn + fp;
  const balanced = positives && negatives ? (tp / positives + tn / negatives) / 2 : null;
  return { balanced_accuracy: balanced, tp, fp, tn, fn };
}

/** A scorer whose answer lists the 1-based numbers of the excerpts it says are true, under `field`. */
function listScorer(method: ScoreMethod, field: string, items: Scorer['items']): Scorer {
  return {
    method,
    items,
    schema: (n) => ({
      answer: z.object({ [field]: z.array(z.number().int().min(1).max(n)) }) as z.ZodType<Record<string, number[]>>,
      name: field,
      schema: objectSchema({ [field]: { type: 'array', maxItems: n, items: { type: 'integer', minimum: 1, maximum: n } } }),
    }),
    score: (truth, answer) => balancedAccuracy(truth, new Set(answer[field]!.map((n) => n - 1))),
  };
}

/** Held-out activating excerpts (not among the `show` the explainer saw, when there are enough) first. */
function activatingExcerpts(feature: FeatureTopExamples, count: number, show: number): TopExample[] {
  const unseen = feature.examples.slice(show);
  const picked = unseen.slice(0, count);
  if (picked.length < count) picked.push(...feature.examples.slice(0, show).slice(-(count - picked.length)));
  return picked.slice(0, count);
}

/**
 * Detection: `count` activating excerpts and as many non-activating ones — top examples of features on other
 * hooks whose token is not among this feature's examples — shuffled. Without the activation store these
 * negatives are "not among this feature's strongest", not proven silent: a scorer's false positives on them
 * are an upper bound.
 */
export const detectionScorer: Scorer = listScorer('detection', 'activating', (feature, { all, count, show, window, rng }) => {
  const positives = activatingExcerpts(feature, count, show);
  const own = new Set(feature.examples.map((e) => `${e.example}:${e.position}`));
  const pool = all.filter((f) => f.hook !== feature.hook).flatMap((f) => f.examples).filter((e) => !own.has(`${e.example}:${e.position}`));
  const negatives = rng.shuffle([...pool]).slice(0, positives.length);
  const mixed = rng.shuffle([...positives.map((e) => ({ e, positive: true })), ...negatives.map((e) => ({ e, positive: false }))]);
  return { items: mixed.map(({ e }) => contextText(e, null, window)), truth: mixed.map(({ positive }) => positive) };
});

/** Fuzzing: activating excerpts, half marked at the firing token, half at another token of the context. */
export const fuzzingScorer: Scorer = listScorer('fuzzing', 'correct', (feature, { count, show, window, rng }) => {
  const excerpts = rng.shuffle([...activatingExcerpts(feature, count, show)]);
  const items: string[] = [];
  const truth: boolean[] = [];
  excerpts.forEach((e, i) => {
    // The wrong mark goes on another token inside the shown window.
    const from = Math.max(0, e.center - window);
    const to = Math.min(e.context_ids.length, e.center + window + 1);
    const wrong = i % 2 === 1 && to - from > 1;
    let mark = e.center;
    if (wrong) {
      mark = from + rng.int(to - from - 1);
      if (mark >= e.center) mark++;
    }
    items.push(contextText(e, mark, window));
    truth.push(!wrong);
  });
  return { items, truth };
});

export const SCORERS: Record<ScoreMethod, Scorer> = { detection: detectionScorer, fuzzing: fuzzingScorer };

export interface ScoreOptions {
  asker: AskerOptions;
  prompts: Prompts;
  /** Every feature of the run, and the excerpt settings (see ScoringContext). */
  all: readonly FeatureTopExamples[];
  count: number;
  show: number;
  window: number;
  seed: number;
  /** The output folder (<method>.partial.jsonl) and the settings hash of the run. */
  out: string;
  settingsHash: string;
}

/** A score row per explained row (in order), from one scorer; each feature's excerpts drawn with its own seed. */
export function scoreExplanations(scorer: Scorer, explained: readonly ExplanationRow[], options: ScoreOptions, onProgress?: ProgressReporter): Promise<ScoreRow[]> {
  const { method } = scorer;
  const byFeature = new Map(options.all.map((f) => [f.feature, f]));
  return runResumableStage<ExplanationRow, ScoreRow>({
    stage: method,
    file: path.join(options.out, `${method}.partial.jsonl`),
    settingsHash: options.settingsHash,
    items: explained,
    feature: (row) => row.feature,
    ask: async (row) => {
      const rng = new Random(seedOf(options.seed, `${method}:${row.feature}`));
      const { items, truth } = scorer.items(byFeature.get(row.feature)!, { all: options.all, count: options.count, show: options.show, window: options.window, rng });
      const user = renderPrompt(options.prompts[method], { explanation: row.explanation, examples: items.map((text) => ({ text })) });
      const answer = await askJson(options.asker, user, scorer.schema(items.length), { stage: method, feature: row.feature });
      const base = { feature: row.feature, kind: row.kind, class: row.class, method };
      return 'value' in answer
        ? { ...base, ...scorer.score(truth, answer.value) }
        : { ...base, balanced_accuracy: null, tp: 0, fp: 0, tn: 0, fn: 0, error: answer.error };
    },
  }, onProgress);
}
