// `rank1 eval --endpoint URL --model NAME`: the harness of `rank1 eval` (s1 prompt, extraction, grading,
// results rows, resume, --limit) with generation by an OpenAI-compatible completions endpoint (src/eval/
// endpoint.ts): vLLM, SGLang or `rank1 serve`, where base, rank-1 and ablated adapters are model names on one
// server. --model is the served name; the tokenizer and chat template come from --tokenizer, or from --model
// when it is also a folder.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { CachedChatClient } from '../interp/llm-client.ts';
import { endpointCompleter } from '../eval/endpoint.ts';
import { DEFAULT_MAX_TOKENS, runEval, type EvalProgress, type EvalTokenizer } from '../eval/run.ts';
import type { BenchmarkName, EvalProblem } from '../eval/benchmarks.ts';
import { note } from './io.ts';

export interface EvalEndpointOptions {
  /** Base URL ending in /v1. */
  endpoint?: string;
  /** Requests in flight at once (default 8). */
  concurrency?: number;
  /** Environment variable holding the API key (default OPENAI_API_KEY). */
  apiKeyEnv?: string;
  /** Seconds one request may take before it is retried (default 3600: a long reasoning trace). */
  requestTimeout?: number;
  /** Retries after the first try of a request (default 6). */
  retries?: number;
  /**
   * The served model is the adapter with these modules left out (`rank1 adapter select --drop`): recorded in
   * every row as `--ablate` would, so `rank1 eval --compare` takes the file as a Table 2 column.
   */
  ablated?: string;
}

/** --endpoint runs generate nowhere else: options that load weights here are refused. */
export function checkEndpointOptions(options: { adapter?: string; ablate?: string; backend?: string }): void {
  if (options.adapter !== undefined) throw new Error('--endpoint generates on the server: serve the adapter there (rank1 serve --lora-modules NAME=DIR, or vLLM\'s) and pass its NAME as --model');
  if (options.ablate !== undefined) throw new Error('--endpoint generates on the server: write the ablated adapter with rank1 adapter select, serve it under a name (--lora-modules), and pass that name as --model');
}

/** max_position_embeddings of the first of `dirs` with a config.json, if any. */
async function contextLengthIn(dirs: readonly string[]): Promise<number | undefined> {
  for (const dir of dirs) {
    const text = await fs.readFile(path.join(dir, 'config.json'), 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    const value = (JSON.parse(text) as { max_position_embeddings?: unknown }).max_position_embeddings;
    if (typeof value === 'number') return value;
  }
  return undefined;
}

export interface EndpointRunContext {
  model: string;
  bench: BenchmarkName;
  data: string;
  problems: readonly EvalProblem[];
  tokenizer: EvalTokenizer & { eosTokenIds?: readonly number[] };
  /** The folder the tokenizer came from (its config.json gives the context length). */
  tokenizerDir?: string;
  chatTemplate: string;
  out: string;
  maxTokens?: number;
  describeProgress: (progress: EvalProgress) => string;
}

export async function evalEndpointRun(options: EvalEndpointOptions, context: EndpointRunContext): Promise<void> {
  const { endpoint, concurrency = 8, apiKeyEnv = 'OPENAI_API_KEY', requestTimeout = 3600, retries = 6 } = options;
  if (!endpoint) throw new Error('evalEndpointRun: no --endpoint');
  const { model, bench, data, problems, tokenizer, out } = context;
  const contextLength = await contextLengthIn([model, ...(context.tokenizerDir ? [context.tokenizerDir] : [])]);
  const maxTokens = context.maxTokens ?? Math.min(DEFAULT_MAX_TOKENS, contextLength ?? DEFAULT_MAX_TOKENS);
  const apiKey = process.env[apiKeyEnv];
  const client = new CachedChatClient({ endpoint, model, ...(apiKey ? { apiKey } : {}), concurrency, retries, timeoutMs: requestTimeout * 1000 });
  const complete = endpointCompleter({ client, tokenizer, ...(contextLength === undefined ? {} : { contextLength }) });
  note(`${bench}: ${problems.length} problem(s) from ${data} on ${endpoint} (model "${model}"), up to ${maxTokens} tokens each, greedy, ${concurrency} request(s) in flight; results → ${out}`);
  const result = await runEval({
    bench, problems, tokenizer, chatTemplate: context.chatTemplate, out, maxTokens,
    complete,
    // `concurrency` problems asked at once, the next as soon as any answers; rows appended in problem order.
    inFlight: concurrency,
    onResume: ({ skipped, truncatedTail, extraRows }) => {
      note(`resuming ${out}: ${skipped} problem(s) already done${truncatedTail ? '; dropped a cut-off last line' : ''}${extraRows ? `; ${extraRows} row(s) beyond --limit kept but not counted` : ''}`);
    },
    onProblem: (progress) => note(context.describeProgress(progress)),
    ...(options.ablated === undefined ? {} : { ablated: options.ablated }),
  });
  const { summary } = result;
  const { requests, retries: retried, failed, promptTokens, completionTokens } = client.totals;
  note(`endpoint: ${requests} request(s), ${retried} retried, ${failed} failed; ${promptTokens} prompt and ${completionTokens} completion tokens (usage)`);
  process.stdout.write(`${JSON.stringify({
    bench, n: summary.n, correct: summary.correct, accuracy: summary.accuracy, meanTokens: summary.meanTokens, generated: result.generated, out,
    endpoint, model, requests, retries: retried, ...(options.ablated === undefined ? {} : { ablated: options.ablated }),
  })}\n`);
}
