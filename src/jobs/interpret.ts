// The autointerpretation job, as `rank1 interpret` and `rank1 demo` both run it: features.jsonl files in;
// explanations, categories, scores, figures, the run log and the response cache out (all under `out`).
//   read features → client (cached, retrying) → interpretFeatures → figures
// The defaults (client and pipeline) are INTERPRET_DEFAULTS, which the CLI's option defaults show too.
import * as path from 'node:path';
import * as fs from 'node:fs/promises';
import { appendJsonl } from '../io/jsonl.ts';
import { AUTOINTERP_DEFAULTS, interpretFeatures } from '../interp/autointerp.ts';
import { loadPrompts } from '../interp/autointerp-prompts.ts';
import type { InterpretProgress, InterpretResult, ScoreMethod } from '../interp/autointerp-types.ts';
import { writeInterpretFigures } from '../interp/autointerp-figures.ts';
import { readFeatureFiles } from '../interp/features-file.ts';
import { CachedChatClient, type LlmTotals } from '../interp/llm-client.ts';
import type { FeatureTopExamples } from '../interp/topk.ts';

export const INTERPRET_DEFAULTS = {
  ...AUTOINTERP_DEFAULTS,
  apiKeyEnv: 'OPENAI_API_KEY',
  /** Requests in flight at once. */
  concurrency: 8,
  /** Retries on 429 / 5xx / timeouts. */
  retries: 6,
  /** Per-request timeout, seconds. */
  timeout: 120,
  temperature: 0,
  maxTokens: 1000,
} as const;

export interface InterpretJobOptions {
  /** features.jsonl files (rank1 topk, rank1 sae features). */
  features: readonly string[];
  out: string;
  /** OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1. */
  endpoint: string;
  model: string;
  apiKey?: string;
  /** A folder of prompt templates replacing the built-in ones. */
  prompts?: string;
  /** Only the first N features. */
  limit?: number;
  /** The response cache (default OUT/cache). */
  cache?: string;
  concurrency?: number;
  retries?: number;
  /** Per-request timeout, seconds. */
  timeout?: number;
  temperature?: number;
  maxTokens?: number;
  show?: number;
  score?: readonly ScoreMethod[];
  scoreExamples?: number;
  /** Tokens shown either side of the activating token (default: the whole stored context). */
  excerpt?: number;
  categorySample?: number;
  seed?: number;
  jsonSchema?: boolean;
  /** Append the run to OUT/log.jsonl: a start line, one line per call, an end line with the totals (default true). */
  log?: boolean;
}

export interface InterpretJobProgress {
  /** Each stage's progress, with the client's running totals (requests, cached answers, tokens). */
  onProgress?: (progress: InterpretProgress, totals: Readonly<LlmTotals>) => void;
}

export interface InterpretJobResult extends InterpretResult {
  out: string;
  features: FeatureTopExamples[];
  /** The figures' numbers (Figure 2 shares, the scoring summary). */
  figures: Awaited<ReturnType<typeof writeInterpretFigures>>;
  totals: LlmTotals & { seconds: number };
}

/** The endpoint as a URL, or an error saying what one looks like. */
export function parseEndpoint(text: string): URL {
  try {
    return new URL(text);
  } catch {
    throw new Error(`--endpoint must be a URL such as http://127.0.0.1:8000/v1, got "${text}"`);
  }
}

/** An endpoint on this machine (no API key needed). */
export const isLocalEndpoint = (endpoint: URL): boolean => ['127.0.0.1', 'localhost', '[::1]'].includes(endpoint.hostname);

export async function runInterpret(options: InterpretJobOptions, progress: InterpretJobProgress = {}): Promise<InterpretJobResult> {
  const settings = { ...INTERPRET_DEFAULTS, ...withoutUndefined(options) };
  const endpoint = parseEndpoint(settings.endpoint);
  const prompts = await loadPrompts(settings.prompts);
  let features = await readFeatureFiles(settings.features);
  if (settings.limit !== undefined) features = features.slice(0, settings.limit);
  const out = path.resolve(settings.out);
  await fs.mkdir(out, { recursive: true });
  const client = new CachedChatClient({
    endpoint: endpoint.toString(), model: settings.model, apiKey: settings.apiKey, cacheDir: settings.cache ?? path.join(out, 'cache'),
    concurrency: settings.concurrency, retries: settings.retries, timeoutMs: settings.timeout * 1000, temperature: settings.temperature, maxTokens: settings.maxTokens,
  });
  const score = [...(settings.score ?? [])];
  const log = runLog(path.join(out, 'log.jsonl'), settings.log ?? true);
  await log.event({ event: 'start', time: new Date().toISOString(), endpoint: endpoint.toString(), model: settings.model, features: features.length, score });
  const started = Date.now();
  const result = await interpretFeatures(features, {
    client, prompts, out, show: settings.show, score, jsonSchema: settings.jsonSchema, window: settings.excerpt, categorySample: settings.categorySample,
    scoreExamples: settings.scoreExamples, seed: settings.seed,
    onCall: log.call,
    onProgress: (p) => {
      progress.onProgress?.(p, client.totals);
      void log.flush();
    },
  });
  await log.flush();
  const figures = await writeInterpretFigures(out, result.explanations, features, result.scores, settings.seed);
  const totals = { ...client.totals, seconds: (Date.now() - started) / 1000 };
  await log.event({ event: 'end', time: new Date().toISOString(), totals });
  return { ...result, out, features, figures, totals };
}

/** The run log: events written at once, call lines gathered and appended at each progress report. */
function runLog(file: string, enabled: boolean) {
  const pending: Record<string, unknown>[] = [];
  return {
    event: (entry: Record<string, unknown>) => (enabled ? appendJsonl(file, entry) : Promise.resolve()),
    call: (entry: Record<string, unknown>) => {
      if (enabled) pending.push({ time: new Date().toISOString(), ...entry });
    },
    flush: async () => {
      if (pending.length) await appendJsonl(file, pending.splice(0));
    },
  };
}

/** Options left undefined take the defaults (a spread would let `undefined` override them). */
function withoutUndefined<T extends object>(options: T): T {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as T;
}
