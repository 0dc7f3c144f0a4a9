// The explainer (the paper's labelling): the LLM reads a feature's max-activating examples and answers an
// explanation of at most 10 words and a class (0 specific, 1 broad, 2 polysemantic). Resumable: one row per
// feature in explain.partial.jsonl.
import * as path from 'node:path';
import { z } from 'zod';
import { featureKind } from '../model/hooks.ts';
import type { FeatureTopExamples } from './topk.ts';
import type { ExplanationRow } from './autointerp-types.ts';
import { contextText, renderPrompt } from './autointerp-prompts.ts';
import { askJson, objectSchema, runResumableStage, type AnswerShape, type AskerOptions, type ProgressReporter } from './autointerp-stage.ts';

const explanationShape: AnswerShape<{ explanation: string; class: 0 | 1 | 2 }> = {
  answer: z.object({
    explanation: z.string().trim().min(1).refine((s) => s.split(/\s+/).length <= 10, 'explanation must be at most 10 words'),
    class: z.union([z.literal(0), z.literal(1), z.literal(2)]),
  }),
  name: 'explanation',
  schema: objectSchema({ explanation: { type: 'string', maxLength: 60 }, class: { enum: [0, 1, 2] } }),
};

export interface ExplainerOptions {
  asker: AskerOptions;
  /** The explain.jinja template. */
  prompt: string;
  /** Examples shown per feature, strongest first. */
  show: number;
  /** Tokens shown either side of the activating token. */
  window: number;
  /** The output folder (explain.partial.jsonl) and the settings hash of the run. */
  out: string;
  settingsHash: string;
}

/** The user message for one feature: its strongest examples, each with its firing token and its strength 0–10. */
export function explainPrompt(feature: FeatureTopExamples, prompt: string, show: number, window: number): string {
  const shown = feature.examples.slice(0, show);
  const largest = Math.max(...shown.map((e) => Math.abs(e.value)), 1e-12);
  const examples = shown.map((e) => ({
    text: contextText(e, e.center, window),
    token: (e.context_tokens[e.center] ?? `[${e.context_ids[e.center]}]`).replace(/\r?\n/g, '⏎'),
    scaled: Math.round((10 * Math.abs(e.value)) / largest),
  }));
  return renderPrompt(prompt, { feature: feature.feature, examples });
}

/** An explanation row per feature (in order); a feature whose answer failed has `error` and nulls. */
export function explainFeatures(features: readonly FeatureTopExamples[], options: ExplainerOptions, onProgress?: ProgressReporter): Promise<ExplanationRow[]> {
  return runResumableStage<FeatureTopExamples, ExplanationRow>({
    stage: 'explain',
    file: path.join(options.out, 'explain.partial.jsonl'),
    settingsHash: options.settingsHash,
    items: features,
    feature: (feature) => feature.feature,
    ask: async (feature) => {
      const user = explainPrompt(feature, options.prompt, options.show, options.window);
      const answer = await askJson(options.asker, user, explanationShape, { stage: 'explain', feature: feature.feature });
      const kind = featureKind(feature.feature);
      return 'value' in answer
        ? { feature: feature.feature, kind, explanation: answer.value.explanation, class: answer.value.class, category: null }
        : { feature: feature.feature, kind, explanation: null, class: null, category: null, error: answer.error };
    },
  }, onProgress);
}
