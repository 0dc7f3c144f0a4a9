// `rank1 interpret`: autointerpretation of features.jsonl files against any OpenAI-compatible endpoint (the
// job is src/jobs/interpret.ts); this file is its terminal side: the API-key warning, the progress bar (or a
// line every few seconds when stderr is not a terminal) and the summary.
import * as path from 'node:path';
import type { ScoreMethod } from '../interp/autointerp-types.ts';
import { isLocalEndpoint, parseEndpoint, runInterpret, type InterpretJobProgress } from '../jobs/interpret.ts';
import { note, progressDisplay } from './io.ts';

export interface InterpretCommandOptions {
  features: string[];
  out: string;
  endpoint: string;
  model: string;
  apiKeyEnv: string;
  prompts?: string;
  concurrency: number;
  retries: number;
  timeout: number;
  show: number;
  score?: string[];
  scoreExamples: number;
  limit?: number;
  seed: number;
  temperature: number;
  maxTokens: number;
  cache?: string;
  jsonSchema: boolean;
  excerpt?: number;
  categorySample: number;
}

export function parseScoreMethods(values: readonly string[] | undefined): ScoreMethod[] {
  const methods = (values ?? []).flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
  for (const m of methods) if (m !== 'detection' && m !== 'fuzzing') throw new Error(`--score must be detection and/or fuzzing, got "${m}"`);
  return [...new Set(methods)] as ScoreMethod[];
}

/** A progress bar per stage on a terminal; elsewhere a line per stage end or every 5 s. */
function progressReporter(): InterpretJobProgress & { stop(): void } {
  const display = progressDisplay<{ stage: string; failed: number; cached: number; requests: number; tokens: number }>({
    bar: '{stage} [{bar}] {value}/{total}  failed {failed}  cached {cached}  requests {requests}  tokens {tokens}',
    line: (value, total, v) => `${v.stage}: ${value}/${total}, failed ${v.failed}, cached ${v.cached}, requests ${v.requests}, tokens ${v.tokens}`,
  });
  let stage = '';
  return {
    onProgress: (p, totals) => {
      if (p.stage !== stage) display.stop();
      stage = p.stage;
      display.update(p.done + p.failed, p.total, {
        stage: p.stage, failed: p.failed, cached: totals.cached, requests: totals.requests, tokens: totals.promptTokens + totals.completionTokens,
      });
    },
    stop: () => display.stop(),
  };
}

export async function interpretCommand(options: InterpretCommandOptions): Promise<void> {
  const score = parseScoreMethods(options.score);
  const endpoint = parseEndpoint(options.endpoint);
  const apiKey = process.env[options.apiKeyEnv];
  if (!apiKey && !isLocalEndpoint(endpoint)) note(`warning: $${options.apiKeyEnv} is not set; sending no API key to ${endpoint.origin}`);
  const progress = progressReporter();
  const result = await runInterpret({ ...options, apiKey, score }, progress).finally(() => progress.stop());

  const { totals, figures: { shares, summary } } = result;
  const explained = result.explanations.filter((r) => r.explanation !== null).length;
  const errors = result.explanations.filter((r) => r.error).length;
  console.log(`${explained}/${result.explanations.length} features explained (${errors} with errors), ${result.categories.length} categories; ` +
    `${totals.requests} requests (${totals.retries} retries), ${totals.cached} cached answers, ${totals.failed} failed calls, ` +
    `${totals.promptTokens} prompt + ${totals.completionTokens} completion tokens, ${totals.seconds.toFixed(1)} s`);
  for (const r of shares.filter((s) => s.class === 0)) console.log(`  ${r.kindName}: ${(100 * r.share).toFixed(1)}% specific (95% ${(100 * r.low).toFixed(1)}–${(100 * r.high).toFixed(1)}%) of ${r.features}`);
  for (const s of summary.filter((x) => x.class === null)) console.log(`  ${s.method} ${s.kind}: balanced accuracy ${s.meanBalancedAccuracy?.toFixed(3)} over ${s.features}`);
  console.log(`wrote ${path.join(result.out, 'explanations.jsonl')}, categories.json, figures.json, classes.svg, category-densities.svg, log.jsonl`);
}
