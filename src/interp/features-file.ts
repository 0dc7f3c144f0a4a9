// features.jsonl, the file `rank1 topk` and `rank1 sae features` write and `rank1 interpret` and
// `rank1 dashboard` read: one line per feature, {feature, hook, polarity, active_count, mean, max, examples}
// (the shape is FeatureTopExamples in topk.ts). Written atomically; read line by line and checked, every
// error naming the file, line and field.
import { z } from 'zod';
import { readJsonl, writeJsonl } from '../io/jsonl.ts';
import type { FeatureTopExamples } from './topk.ts';

/** One JSON line per feature, written to a temporary file and renamed into place (never half-written). */
export async function writeFeaturesJsonl(file: string, features: readonly FeatureTopExamples[]): Promise<void> {
  await writeJsonl(file, features, { sync: false });
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
    for await (const { value, line } of readJsonl(file, { label: '--features' })) {
      const parsed = featureSchema.safeParse(value);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw new Error(`${file}:${line}: field ${issue.path.join('.') || '(line)'}: ${issue.message} (expected a features.jsonl line from rank1 topk or rank1 sae features)`);
      }
      const feature = parsed.data as unknown as FeatureTopExamples;
      const before = seen.get(feature.feature);
      if (before) throw new Error(`${file}:${line}: feature "${feature.feature}" also appears in ${before}`);
      seen.set(feature.feature, `${file}:${line}`);
      features.push(feature);
    }
  }
  if (features.length === 0) throw new Error(`--features: no features in ${files.join(', ')}`);
  return features;
}
