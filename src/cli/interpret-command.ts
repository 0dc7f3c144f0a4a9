// `rank1 interpret`: autointerpretation of features.jsonl files against any OpenAI-compatible endpoint
// (src/interp/autointerp.ts), then the figures (src/interp/autointerp-figures.ts).
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import cliProgress from 'cli-progress';
import { loadPrompts, interpretFeatures, readFeatureFiles, type ScoreMethod } from '../interp/autointerp.ts';
import { CachedChatClient } from '../interp/llm-client.ts';
import { writeInterpretFigures } from '../interp/autointerp-figures.ts';

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

const note = (line: string) => process.stderr.write(`${line}\n`);

export function parseScoreMethods(values: readonly string[] | undefined): ScoreMethod[] {
  const methods = (values ?? []).flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
  for (const m of methods) if (m !== 'detection' && m !== 'fuzzing') throw new Error(`--score must be detection and/or fuzzing, got "${m}"`);
  return [...new Set(methods)] as ScoreMethod[];
}

export async function interpretCommand(options: InterpretCommandOptions): Promise<void> {
  const score = parseScoreMethods(options.score);
  let endpoint: URL;
  try {
    endpoint = new URL(options.endpoint);
  } catch {
    throw new Error(`--endpoint must be a URL such as http://127.0.0.1:8000/v1, got "${options.endpoint}"`);
  }
  const prompts = await loadPrompts(options.prompts);
  let features = await readFeatureFiles(options.features);
  if (options.limit !== undefined) features = features.slice(0, options.limit);
  const out = path.resolve(options.out);
  await fs.mkdir(out, { recursive: true });
  const apiKey = process.env[options.apiKeyEnv];
  const local = ['127.0.0.1', 'localhost', '[::1]'].includes(endpoint.hostname);
  if (!apiKey && !local) note(`warning: $${options.apiKeyEnv} is not set; sending no API key to ${endpoint.origin}`);
  const client = new CachedChatClient({
    endpoint: endpoint.toString(), model: options.model, apiKey, cacheDir: options.cache ?? path.join(out, 'cache'),
    concurrency: options.concurrency, retries: options.retries, timeoutMs: options.timeout * 1000, temperature: options.temperature, maxTokens: options.maxTokens,
  });
  const logFile = path.join(out, 'log.jsonl');
  await fs.appendFile(logFile, `${JSON.stringify({ event: 'start', time: new Date().toISOString(), endpoint: endpoint.toString(), model: options.model, features: features.length, score })}\n`);
  const logLines: string[] = [];
  const flushLog = async () => {
    if (logLines.length) await fs.appendFile(logFile, logLines.splice(0).join(''));
  };
  const bar = process.stderr.isTTY
    ? new cliProgress.SingleBar({ format: '{stage} [{bar}] {value}/{total}  failed {failed}  cached {cached}  requests {requests}  tokens {tokens}', stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic)
    : null;
  let stage = '';
  let lastPrinted = 0;
  let lastLine = '';
  const payload = () => ({ cached: client.totals.cached, requests: client.totals.requests, tokens: client.totals.promptTokens + client.totals.completionTokens });
  const started = Date.now();
  const result = await interpretFeatures(features, {
    client, prompts, out, show: options.show, score, jsonSchema: options.jsonSchema, window: options.excerpt, categorySample: options.categorySample, scoreExamples: options.scoreExamples, seed: options.seed,
    onCall: (entry) => logLines.push(`${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`),
    onProgress: (p) => {
      if (p.stage !== stage) {
        bar?.stop();
        stage = p.stage;
        bar?.start(p.total, 0, { stage, failed: 0, ...payload() });
      }
      bar?.update(p.done + p.failed, { stage, failed: p.failed, ...payload() });
      const line = `${p.stage}: ${p.done + p.failed}/${p.total}, failed ${p.failed}, cached ${client.totals.cached}, requests ${client.totals.requests}, tokens ${payload().tokens}`;
      if (!bar && line !== lastLine && (p.done + p.failed === p.total || Date.now() - lastPrinted > 5000)) {
        lastPrinted = Date.now();
        lastLine = line;
        note(line);
      }
      void flushLog();
    },
  });
  bar?.stop();
  await flushLog();

  const { shares, summary } = await writeInterpretFigures(out, result.explanations, features, result.scores, options.seed);
  const totals = { ...client.totals, seconds: (Date.now() - started) / 1000 };
  await fs.appendFile(logFile, `${JSON.stringify({ event: 'end', time: new Date().toISOString(), totals })}\n`);

  const explained = result.explanations.filter((r) => r.explanation !== null).length;
  const errors = result.explanations.filter((r) => r.error).length;
  console.log(`${explained}/${result.explanations.length} features explained (${errors} with errors), ${result.categories.length} categories; ` +
    `${totals.requests} requests (${totals.retries} retries), ${totals.cached} cached answers, ${totals.failed} failed calls, ` +
    `${totals.promptTokens} prompt + ${totals.completionTokens} completion tokens, ${totals.seconds.toFixed(1)} s`);
  for (const r of shares.filter((s) => s.class === 0)) console.log(`  ${r.kindName}: ${(100 * r.share).toFixed(1)}% specific (95% ${(100 * r.low).toFixed(1)}–${(100 * r.high).toFixed(1)}%) of ${r.features}`);
  for (const s of summary.filter((x) => x.class === null)) console.log(`  ${s.method} ${s.kind}: balanced accuracy ${s.meanBalancedAccuracy?.toFixed(3)} over ${s.features}`);
  console.log(`wrote ${path.join(out, 'explanations.jsonl')}, categories.json, figures.json, classes.svg, category-densities.svg, log.jsonl`);
}
