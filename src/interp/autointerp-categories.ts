// Categories: the LLM proposes 5–8 functional categories from (a seeded sample of) all explanations, then
// assigns each explained feature one of them. The proposal is one question (the response cache makes a rerun
// free); the assignment is resumable, one row per feature in assign.partial.jsonl.
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { z } from 'zod';
import { Random } from '../tensor/random.ts';
import type { Category, ExplanationRow } from './autointerp-types.ts';
import { renderPrompt } from './autointerp-prompts.ts';
import { askJson, objectSchema, runResumableStage, seedOf, type AnswerShape, type AskerOptions, type ProgressReporter } from './autointerp-stage.ts';

export interface CategoryOptions {
  asker: AskerOptions;
  /** categories.jinja */
  prompt: string;
  /** Explanations (drawn with the seed) the proposal sees, so its prompt fits a context. */
  sample: number;
  minCategories: number;
  maxCategories: number;
  seed: number;
}

/** The proposal's answer: names repeated (case aside) are merged; what is left must still number min..max. */
function categoriesShape(minCategories: number, maxCategories: number): AnswerShape<{ categories: Category[] }> {
  return {
    answer: z.object({
      categories: z.array(z.object({ name: z.string().trim().min(1), description: z.string().trim() })).max(maxCategories)
        .transform((list) => list.filter((c, i) => list.findIndex((d) => d.name.toLowerCase() === c.name.toLowerCase()) === i))
        .refine((list) => list.length >= minCategories, `at least ${minCategories} different category names`),
    }),
    name: 'categories',
    schema: objectSchema({
      categories: { type: 'array', minItems: minCategories, maxItems: maxCategories, items: objectSchema({ name: { type: 'string', maxLength: 32 }, description: { type: 'string', maxLength: 80 } }) },
    }),
  };
}

/** Categories proposed from the explained rows (at least one), or the error that left none. */
export async function proposeCategories(explained: readonly ExplanationRow[], options: CategoryOptions, onProgress: ProgressReporter = () => undefined): Promise<{ categories: Category[]; error: string | null }> {
  const minCategories = Math.min(options.minCategories, explained.length);
  const maxCategories = Math.max(minCategories, options.maxCategories);
  onProgress({ stage: 'categories', done: 0, total: 1, failed: 0 });
  const sample = explained.length > options.sample
    ? new Random(seedOf(options.seed, 'categories')).shuffle([...explained]).slice(0, options.sample) : explained;
  const user = renderPrompt(options.prompt, {
    explanations: sample.map((r) => ({ feature: r.feature, explanation: r.explanation })), min_categories: minCategories, max_categories: maxCategories,
  });
  const answer = await askJson(options.asker, user, categoriesShape(minCategories, maxCategories), { stage: 'categories' });
  const ok = 'value' in answer;
  onProgress({ stage: 'categories', done: ok ? 1 : 0, total: 1, failed: ok ? 0 : 1 });
  return ok ? { categories: answer.value.categories.map((c) => ({ name: c.name, description: c.description })), error: null } : { categories: [], error: answer.error };
}

export interface AssignOptions {
  asker: AskerOptions;
  /** assign.jinja */
  prompt: string;
  /** The output folder (assign.partial.jsonl) and the settings hash of the run. */
  out: string;
  settingsHash: string;
}

type Assignment = { feature: string; category: string; error?: undefined } | { feature: string; error: string; category?: undefined };

/** Sets each explained row's `category` (or `error`, when its answer failed) to one of `categories`. */
export async function assignCategories(explained: readonly ExplanationRow[], categories: readonly Category[], options: AssignOptions, onProgress?: ProgressReporter): Promise<void> {
  const byName = new Map(categories.map((c) => [c.name.toLowerCase(), c.name]));
  const shape: AnswerShape<{ category: string }> = {
    answer: z.object({ category: z.string().trim().refine((name) => byName.has(name.toLowerCase()), 'category must be one of the names given') }),
    name: 'category',
    schema: objectSchema({ category: { enum: categories.map((c) => c.name) } }),
  };
  const assignments = await runResumableStage<ExplanationRow, Assignment>({
    stage: 'assign',
    file: path.join(options.out, 'assign.partial.jsonl'),
    // Assignments depend on the categories too.
    settingsHash: createHash('sha256').update(options.settingsHash + JSON.stringify(categories)).digest('hex').slice(0, 16),
    items: explained,
    feature: (row) => row.feature,
    reuse: (before) => (before.category !== undefined && byName.has(before.category.toLowerCase()) ? { feature: before.feature, category: byName.get(before.category.toLowerCase())! } : null),
    ask: async (row) => {
      const user = renderPrompt(options.prompt, { explanation: row.explanation, categories });
      const answer = await askJson(options.asker, user, shape, { stage: 'assign', feature: row.feature });
      return 'value' in answer ? { feature: row.feature, category: byName.get(answer.value.category.toLowerCase())! } : { feature: row.feature, error: answer.error };
    },
  }, onProgress);
  explained.forEach((row, i) => {
    const assignment = assignments[i]!;
    if (assignment.error !== undefined) row.error = `category: ${assignment.error}`;
    else row.category = assignment.category;
  });
}
