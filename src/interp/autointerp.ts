// Autointerpretation (the paper's labelling, and delphi-style scoring on top): an LLM reads each feature's
// max-activating examples (features.jsonl from `rank1 topk` or `rank1 sae features`), explains it in ≤ 10 words
// and classifies it (0 specific, 1 broad, 2 polysemantic); then proposes 5–8 functional categories from all
// explanations; then assigns each feature one category. Optionally each explanation is scored: detection
// (which of a shuffled mix of activating and non-activating excerpts fire?) and fuzzing (is the marked token
// the one that fires?), reported as balanced accuracy.
//
// Every call goes through CachedChatClient (cache, retries, bounded concurrency). An answer that is not the
// JSON asked for is asked again once (a different cache key), then recorded as an error row; nothing crashes
// the run. Results are appended to DIR/*.partial.jsonl as they arrive, so a killed run loses nothing, and a
// rerun skips what is there (and the cache answers the rest without a request).
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { Template } from '@huggingface/jinja';
import { z } from 'zod';
import { Random } from '../tensor/random.ts';
import type { FeatureTopExamples, TopExample } from './topk.ts';
import type { CachedChatClient, ChatMessageIn } from './llm-client.ts';

export const PROMPT_NAMES = ['system', 'explain', 'categories', 'assign', 'detection', 'fuzzing'] as const;
export type PromptName = (typeof PROMPT_NAMES)[number];
export type Prompts = Record<PromptName, string>;

const BUILT_IN_PROMPTS = path.join(import.meta.dirname, 'prompts');

/** The prompt templates (Jinja): the built-in ones, each replaced by `DIR/<name>.jinja` when `dir` has it. */
export async function loadPrompts(dir?: string): Promise<Prompts> {
  const prompts = {} as Prompts;
  if (dir) {
    const stat = await fs.stat(dir).catch(() => null);
    if (!stat?.isDirectory()) throw new Error(`--prompts ${dir}: not a folder (it should hold any of ${PROMPT_NAMES.map((n) => `${n}.jinja`).join(', ')})`);
  }
  for (const name of PROMPT_NAMES) {
    const custom = dir ? await fs.readFile(path.join(dir, `${name}.jinja`), 'utf8').catch(() => null) : null;
    const text = custom ?? await fs.readFile(path.join(BUILT_IN_PROMPTS, `${name}.jinja`), 'utf8');
    try {
      new Template(text);
    } catch (error) {
      throw new Error(`prompt template ${custom !== null ? path.join(dir!, `${name}.jinja`) : name} does not parse: ${(error as Error).message}`);
    }
    prompts[name] = text;
  }
  return prompts;
}

function render(template: string, context: Record<string, unknown>): string {
  return new Template(template).render(context).trim();
}

export type FeatureKind = 'adapter' | 'mlp' | 'sae' | 'other';

/** adapter directions (L3_q_proj_pos), MLP neurons (L3_up_neuron12_pos), SAE latents (sae_7). */
export function featureKind(name: string): FeatureKind {
  if (/^sae_\d+$/.test(name)) return 'sae';
  if (/^L\d+_up_neuron\d+_(pos|neg)$/.test(name)) return 'mlp';
  if (/^L\d+_(q|k|v|o|gate|up|down)_proj_(pos|neg)$/.test(name)) return 'adapter';
  return 'other';
}

const exampleSchema = z.object({
  example: z.number().int(), position: z.number().int(), value: z.number(),
  context_ids: z.array(z.number().int()), context_tokens: z.array(z.string()), center: z.number().int().min(0),
  context_values: z.array(z.number()).optional(),
}).passthrough();
const featureSchema = z.object({
  feature: z.string().min(1), hook: z.string(), polarity: z.string(), active_count: z.number(), mean: z.number(), max: z.number(),
  examples: z.array(exampleSchema),
}).passthrough();

/** Features from features.jsonl files; a malformed line is an error naming the file, line and field. */
export async function readFeatureFiles(files: readonly string[]): Promise<FeatureTopExamples[]> {
  const features: FeatureTopExamples[] = [];
  const seen = new Map<string, string>();
  for (const file of files) {
    // Line by line: a features file of a large model holds thousands of features with their contexts.
    const handle = await fs.open(file, 'r').catch((error: Error) => {
      throw new Error(`--features ${file}: ${error.message}`);
    });
    let i = -1;
    for await (const line of handle.readLines({ encoding: 'utf8' })) {
      i++;
      if (line.trim() === '') continue;
      let json: unknown;
      try {
        json = JSON.parse(line);
      } catch {
        throw new Error(`${file}:${i + 1}: not JSON`);
      }
      const parsed = featureSchema.safeParse(json);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw new Error(`${file}:${i + 1}: field ${issue.path.join('.') || '(line)'}: ${issue.message} (expected a features.jsonl line from rank1 topk or rank1 sae features)`);
      }
      const feature = parsed.data as unknown as FeatureTopExamples;
      const before = seen.get(feature.feature);
      if (before) throw new Error(`${file}:${i + 1}: feature "${feature.feature}" also appears in ${before}`);
      seen.set(feature.feature, `${file}:${i + 1}`);
      features.push(feature);
    }
  }
  if (features.length === 0) throw new Error(`--features: no features in ${files.join(', ')}`);
  return features;
}

/**
 * One context as one line of text, the activating token marked <<so>> (or the token at `mark`), cut to
 * `window` tokens either side of the activating token.
 */
export function contextText(example: TopExample, mark: number | null = example.center, window = Infinity): string {
  const tokens = example.context_tokens.length === example.context_ids.length ? example.context_tokens : example.context_ids.map((id) => `[${id}]`);
  const from = Math.max(0, example.center - window);
  const to = Math.min(tokens.length, example.center + window + 1);
  return tokens.slice(from, to).map((token, i) => (i + from === mark ? `<<${token}>>` : token)).join('').replace(/\r?\n/g, '⏎');
}

/** The first JSON object in a model's answer (code fences and prose around it tolerated), or null. */
export function extractJson(text: string): unknown {
  const start = text.indexOf('{');
  const end = text.lastIndexOf('}');
  if (start < 0 || end <= start) return null;
  try {
    return JSON.parse(text.slice(start, end + 1));
  } catch {
    return null;
  }
}

const explanationAnswer = z.object({
  explanation: z.string().trim().min(1).refine((s) => s.split(/\s+/).length <= 10, 'explanation must be at most 10 words'),
  class: z.union([z.literal(0), z.literal(1), z.literal(2)]),
});

export interface ExplanationRow {
  feature: string;
  kind: FeatureKind;
  explanation: string | null;
  class: 0 | 1 | 2 | null;
  category: string | null;
  /** Why a step failed (after one retry), when it did. */
  error?: string;
}

export interface Category {
  name: string;
  description: string;
}

export interface ScoreRow {
  feature: string;
  kind: FeatureKind;
  class: 0 | 1 | 2 | null;
  method: 'detection' | 'fuzzing';
  balanced_accuracy: number | null;
  tp: number;
  fp: number;
  tn: number;
  fn: number;
  error?: string;
}

export type ScoreMethod = 'detection' | 'fuzzing';

export interface InterpretProgress {
  stage: 'explain' | 'categories' | 'assign' | 'detection' | 'fuzzing';
  done: number;
  total: number;
  failed: number;
}

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

export interface InterpretResult {
  explanations: ExplanationRow[];
  categories: Category[];
  scores: ScoreRow[];
}

/**
 * Rows of a partial file written by a run with the same settings (`run`, a hash of prompts, model, sampling
 * and shown examples): a run with other settings asks again (and the cache still answers what it can).
 */
async function readPartial<T extends { feature: string }>(file: string, run: string): Promise<Map<string, T>> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  const rows = new Map<string, T>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const { run: written, ...row } = JSON.parse(line) as T & { error?: string; run?: string };
      if (written === run && !row.error) rows.set(row.feature, row as unknown as T); // error rows are tried again (the cache answers for free)
    } catch {
      // A line cut by a kill: ignored, its feature is asked again (from the cache).
    }
  }
  return rows;
}

/**
 * Asks `messages`, parses the answer with `schema`; an answer that is not that JSON is asked once more
 * (attempt 1), then reported as an error. Transport failures (after the client's retries) are errors too.
 */
async function askJson<T>(
  client: CachedChatClient, messages: ChatMessageIn[], schema: z.ZodType<T>, log: (entry: Record<string, unknown>) => void,
  what: Record<string, unknown>, jsonSchema: { name: string; schema: unknown } | null,
): Promise<{ value: T } | { error: string }> {
  let problem = '';
  const responseFormat = jsonSchema ? { type: 'json_schema', json_schema: { name: jsonSchema.name, strict: true, schema: jsonSchema.schema } } : undefined;
  for (let attempt = 0; attempt < 2; attempt++) {
    const started = Date.now();
    try {
      const answer = await client.complete(messages, attempt, responseFormat);
      const parsed = schema.safeParse(extractJson(answer.text));
      log({ ...what, attempt, cached: answer.cached, requests: answer.requests, usage: answer.usage, ms: Date.now() - started, ok: parsed.success });
      if (parsed.success) return { value: parsed.data };
      problem = `the answer is not the JSON asked for (${parsed.error.issues[0]?.message ?? 'no JSON object'}): ${answer.text.slice(0, 200)}`;
    } catch (error) {
      log({ ...what, attempt, ms: Date.now() - started, ok: false, error: (error as Error).message });
      return { error: (error as Error).message };
    }
  }
  return { error: problem };
}

function seedOf(seed: number, name: string): number {
  let h = seed >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 2654435761) >>> 0;
  return h;
}

/** Balanced accuracy (TPR + TNR) / 2 of answered indices against the truth. */
export function balancedAccuracy(truth: readonly boolean[], answered: ReadonlySet<number>): { balanced_accuracy: number | null; tp: number; fp: number; tn: number; fn: number } {
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

export async function interpretFeatures(features: readonly FeatureTopExamples[], options: InterpretOptions): Promise<InterpretResult> {
  const { client, prompts, out } = options;
  const show = options.show ?? 20;
  const seed = options.seed ?? 42;
  const log = options.onCall ?? (() => undefined);
  const structured = options.jsonSchema ?? true;
  const format = (name: string, schema: unknown) => (structured ? { name, schema: { ...(schema as object), additionalProperties: false } } : null);
  const obj = (properties: Record<string, unknown>) => ({ type: 'object', properties, required: Object.keys(properties), additionalProperties: false });
  await fs.mkdir(out, { recursive: true });
  const system: ChatMessageIn = { role: 'system', content: render(prompts.system, {}) };
  const usable = features.filter((f) => f.examples.length > 0);
  const { model, temperature, maxTokens } = client.options;
  const run = createHash('sha256').update(JSON.stringify({ prompts, model, temperature, maxTokens, show, window: options.window ?? null, structured, seed, scoreExamples: options.scoreExamples ?? 10 })).digest('hex').slice(0, 16);
  const append = (file: string, row: object) => fs.appendFile(file, `${JSON.stringify({ ...row, run })}\n`);
  const window = options.window ?? Infinity;

  // 1. Explain and classify each feature.
  const explainFile = path.join(out, 'explain.partial.jsonl');
  const explained = await readPartial<ExplanationRow>(explainFile, run);
  const explainErrors = new Map<string, string>();
  let done = 0;
  let failed = 0;
  const progress = (stage: InterpretProgress['stage'], total: number) => options.onProgress?.({ stage, done, total, failed });
  progress('explain', usable.length);
  await Promise.all(usable.map(async (feature) => {
    if (explained.has(feature.feature)) {
      done++;
      progress('explain', usable.length);
      return;
    }
    const shown = feature.examples.slice(0, show);
    const largest = Math.max(...shown.map((e) => Math.abs(e.value)), 1e-12);
    const examples = shown.map((e) => ({
      text: contextText(e, e.center, window),
      token: (e.context_tokens[e.center] ?? `[${e.context_ids[e.center]}]`).replace(/\r?\n/g, '⏎'),
      scaled: Math.round((10 * Math.abs(e.value)) / largest),
    }));
    const user = render(prompts.explain, { feature: feature.feature, examples });
    const answer = await askJson(client, [system, { role: 'user', content: user }], explanationAnswer, log, { stage: 'explain', feature: feature.feature },
      format('explanation', obj({ explanation: { type: 'string', maxLength: 60 }, class: { enum: [0, 1, 2] } })));
    const row: ExplanationRow = 'value' in answer
      ? { feature: feature.feature, kind: featureKind(feature.feature), explanation: answer.value.explanation, class: answer.value.class, category: null }
      : { feature: feature.feature, kind: featureKind(feature.feature), explanation: null, class: null, category: null, error: answer.error };
    if (!('value' in answer)) {
      failed++;
      explainErrors.set(feature.feature, answer.error);
    } else explained.set(feature.feature, row);
    await append(explainFile, row);
    if ('value' in answer) done++;
    progress('explain', usable.length);
  }));
  const rows: ExplanationRow[] = usable.map((f) => explained.get(f.feature) ?? { feature: f.feature, kind: featureKind(f.feature), explanation: null, class: null, category: null, error: explainErrors.get(f.feature) ?? 'explanation failed (see log.jsonl)' });
  const good = rows.filter((r) => r.explanation !== null);

  // 2. Categories from all explanations.
  let categories: Category[] = [];
  let categoriesError: string | null = null;
  if (good.length > 0) {
    const minCategories = Math.min(options.minCategories ?? 5, good.length);
    const maxCategories = Math.max(minCategories, options.maxCategories ?? 8);
    // Names repeated (case aside) are merged; what is left must still number min..max.
    const schema = z.object({
      categories: z.array(z.object({ name: z.string().trim().min(1), description: z.string().trim() })).max(maxCategories)
        .transform((list) => list.filter((c, i) => list.findIndex((d) => d.name.toLowerCase() === c.name.toLowerCase()) === i))
        .refine((list) => list.length >= minCategories, `at least ${minCategories} different category names`),
    });
    done = 0;
    failed = 0;
    progress('categories', 1);
    const sample = good.length > (options.categorySample ?? 200)
      ? new Random(seedOf(seed, 'categories')).shuffle([...good]).slice(0, options.categorySample ?? 200) : good;
    const user = render(prompts.categories, { explanations: sample.map((r) => ({ feature: r.feature, explanation: r.explanation })), min_categories: minCategories, max_categories: maxCategories });
    const answer = await askJson(client, [system, { role: 'user', content: user }], schema, log, { stage: 'categories' },
      format('categories', obj({ categories: { type: 'array', minItems: minCategories, maxItems: maxCategories, items: obj({ name: { type: 'string', maxLength: 32 }, description: { type: 'string', maxLength: 80 } }) } })));
    if ('value' in answer) categories = answer.value.categories.map((c) => ({ name: c.name, description: c.description }));
    else {
      categoriesError = answer.error;
      failed++;
    }
    done = 1;
    progress('categories', 1);
  }
  await fs.writeFile(path.join(out, 'categories.json'), `${JSON.stringify({ categories, error: categoriesError }, null, 2)}\n`);

  // 3. One category per feature.
  if (categories.length > 0) {
    const assignFile = path.join(out, 'assign.partial.jsonl');
    // Assignments depend on the categories too.
    const assignRun = createHash('sha256').update(run + JSON.stringify(categories)).digest('hex').slice(0, 16);
    const assigned = await readPartial<{ feature: string; category: string }>(assignFile, assignRun);
    const byName = new Map(categories.map((c) => [c.name.toLowerCase(), c.name]));
    const schema = z.object({ category: z.string().trim().refine((name) => byName.has(name.toLowerCase()), 'category must be one of the names given') });
    done = 0;
    failed = 0;
    progress('assign', good.length);
    await Promise.all(good.map(async (row) => {
      const before = assigned.get(row.feature);
      if (before && byName.has(before.category.toLowerCase())) {
        row.category = byName.get(before.category.toLowerCase())!;
        done++;
        progress('assign', good.length);
        return;
      }
      const user = render(prompts.assign, { explanation: row.explanation, categories });
      const answer = await askJson(client, [system, { role: 'user', content: user }], schema, log, { stage: 'assign', feature: row.feature },
        format('category', obj({ category: { enum: categories.map((c) => c.name) } })));
      if ('value' in answer) {
        row.category = byName.get(answer.value.category.toLowerCase())!;
        await fs.appendFile(assignFile, `${JSON.stringify({ feature: row.feature, category: row.category, run: assignRun })}\n`);
        done++;
      } else {
        row.error = `category: ${answer.error}`;
        await fs.appendFile(assignFile, `${JSON.stringify({ feature: row.feature, error: answer.error, run: assignRun })}\n`);
        failed++;
      }
      progress('assign', good.length);
    }));
  }
  await writeJsonl(path.join(out, 'explanations.jsonl'), rows.map(({ feature, kind, explanation, class: cls, category, error }) => ({ feature, kind, explanation, class: cls, category, ...(error ? { error } : {}) })));

  // 4. Scoring the explanations.
  const scores: ScoreRow[] = [];
  const byFeature = new Map(usable.map((f) => [f.feature, f]));
  for (const method of options.score ?? []) {
    const file = path.join(out, `${method}.partial.jsonl`);
    const previous = await readPartial<ScoreRow>(file, run);
    done = 0;
    failed = 0;
    progress(method, good.length);
    const results = await Promise.all(good.map(async (row): Promise<ScoreRow> => {
      const before = previous.get(row.feature);
      if (before) {
        done++;
        progress(method, good.length);
        return before;
      }
      const feature = byFeature.get(row.feature)!;
      const rng = new Random(seedOf(seed, `${method}:${row.feature}`));
      const { items, truth } = method === 'detection' ? detectionItems(feature, usable, options.scoreExamples ?? 10, show, rng, window) : fuzzingItems(feature, options.scoreExamples ?? 10, show, rng, window);
      const field = method === 'detection' ? 'activating' : 'correct';
      const schema = z.object({ [field]: z.array(z.number().int().min(1).max(items.length)) }) as z.ZodType<Record<string, number[]>>;
      const user = render(prompts[method], { explanation: row.explanation, examples: items.map((text) => ({ text })) });
      const answer = await askJson(client, [system, { role: 'user', content: user }], schema, log, { stage: method, feature: row.feature },
        format(field, obj({ [field]: { type: 'array', maxItems: items.length, items: { type: 'integer', minimum: 1, maximum: items.length } } })));
      const base = { feature: row.feature, kind: row.kind, class: row.class, method };
      const score: ScoreRow = 'value' in answer
        ? { ...base, ...balancedAccuracy(truth, new Set(answer.value[field]!.map((n) => n - 1))) }
        : { ...base, balanced_accuracy: null, tp: 0, fp: 0, tn: 0, fn: 0, error: answer.error };
      await append(file, score);
      if ('value' in answer) done++;
      else failed++;
      progress(method, good.length);
      return score;
    }));
    scores.push(...results);
  }
  if (scores.length) await writeJsonl(path.join(out, 'scores.jsonl'), scores);
  return { explanations: rows, categories, scores };
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
function detectionItems(feature: FeatureTopExamples, all: readonly FeatureTopExamples[], count: number, show: number, rng: Random, window: number): { items: string[]; truth: boolean[] } {
  const positives = activatingExcerpts(feature, count, show);
  const own = new Set(feature.examples.map((e) => `${e.example}:${e.position}`));
  const pool = all.filter((f) => f.hook !== feature.hook).flatMap((f) => f.examples).filter((e) => !own.has(`${e.example}:${e.position}`));
  const negatives = rng.shuffle([...pool]).slice(0, positives.length);
  const mixed = rng.shuffle([...positives.map((e) => ({ e, positive: true })), ...negatives.map((e) => ({ e, positive: false }))]);
  return { items: mixed.map(({ e }) => contextText(e, null, window)), truth: mixed.map(({ positive }) => positive) };
}

/** Fuzzing: activating excerpts, half marked at the firing token, half at another token of the context. */
function fuzzingItems(feature: FeatureTopExamples, count: number, show: number, rng: Random, window: number): { items: string[]; truth: boolean[] } {
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
}

async function writeJsonl(file: string, rows: readonly unknown[]): Promise<void> {
  const temporary = `${file}.tmp`;
  await fs.writeFile(temporary, rows.map((r) => `${JSON.stringify(r)}\n`).join(''));
  await fs.rename(temporary, file);
}
