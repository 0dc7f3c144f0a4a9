// The chat client behind `rank1 interpret`: any OpenAI-compatible endpoint (`POST {endpoint}/chat/completions`),
// with the three properties a labelling run over thousands of features needs:
//  - never pay twice: every successful response is cached on disk under a hash of (model, messages,
//    sampling settings, attempt), written atomically (src/io), so a rerun asks nothing it has asked before;
//  - bounded concurrency (p-limit) and retries on 429, 5xx, timeouts and dropped connections, with exponential
//    backoff and full jitter, honouring `Retry-After` / `retry-after-ms`;
//  - accounting: requests made, cached answers, failures and tokens spent, for the progress bar and the log.
// Plain fetch rather than the openai package: the retry policy, timeouts and cache keys are ours to control.
// The same retries serve legacy completions (`POST {endpoint}/completions`, `textCompletion`), which
// `rank1 eval --endpoint` sends its rendered s1 prompts to; those are not cached (the eval's results file is
// its record).
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import pLimit from 'p-limit';
import { writeFileAtomic } from '../io/atomic.ts';

export interface ChatMessageIn {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface LlmUsage {
  prompt_tokens: number;
  completion_tokens: number;
}

export interface LlmAnswer {
  text: string;
  usage: LlmUsage;
  cached: boolean;
  /** HTTP attempts this call made (0 when cached). */
  requests: number;
}

export interface LlmClientOptions {
  /** Base URL ending in /v1 (e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1). */
  endpoint: string;
  model: string;
  apiKey?: string;
  /** Where chat answers are cached (needed by `complete`; `textCompletion` caches nothing). */
  cacheDir?: string;
  /** Requests in flight at once (default 8). */
  concurrency?: number;
  /** Retries after the first try on 429 / 5xx / timeout / network error (default 6). */
  retries?: number;
  /** Per-request timeout in ms (default 120 000). */
  timeoutMs?: number;
  /** First backoff in ms, doubled per retry, capped at maxBackoffMs (defaults 1000, 60 000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  temperature?: number;
  maxTokens?: number;
  /** Sleep (injectable for tests). */
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
}

/** A legacy completion's answer (`choices[0]` of `POST /completions`). */
export interface TextCompletionAnswer {
  text: string;
  /** 'stop' or 'length' (null if the endpoint gave none). */
  finishReason: string | null;
  /** vLLM's stop_reason: the stop token id or stop string that ended the text, null for the end-of-sequence token or none. */
  stopReason: number | string | null;
  usage: LlmUsage;
  /** HTTP attempts this call made. */
  requests: number;
}

export class LlmRequestError extends Error {
  constructor(message: string, readonly status: number | null, readonly retryable: boolean) {
    super(message);
  }
}

export interface LlmTotals {
  requests: number;
  cached: number;
  failed: number;
  retries: number;
  promptTokens: number;
  completionTokens: number;
}

/** Milliseconds a Retry-After (seconds or an HTTP date) or retry-after-ms header asks for, or null. */
export function retryAfterMs(headers: Headers, now = Date.now()): number | null {
  const ms = headers.get('retry-after-ms');
  if (ms !== null && Number.isFinite(Number(ms))) return Math.max(0, Number(ms));
  const value = headers.get('retry-after');
  if (value === null) return null;
  if (/^\s*\d+(\.\d+)?\s*$/.test(value)) return Math.max(0, Number(value) * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

export class CachedChatClient {
  readonly totals: LlmTotals = { requests: 0, cached: 0, failed: 0, retries: 0, promptTokens: 0, completionTokens: 0 };
  private readonly limit: ReturnType<typeof pLimit>;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly random: () => number;

  constructor(readonly options: LlmClientOptions) {
    this.limit = pLimit(options.concurrency ?? 8);
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.random = options.random ?? Math.random;
  }

  /**
   * The request body. A second attempt (after an answer that was not the JSON asked for) samples at
   * temperature ≥ 0.7 with seed 1, so a deterministic endpoint does not repeat the same answer.
   */
  private body(messages: readonly ChatMessageIn[], attempt: number, responseFormat?: unknown) {
    const { model, temperature = 0, maxTokens = 1000 } = this.options;
    return {
      model, messages, max_tokens: maxTokens,
      ...(attempt === 0 ? { temperature } : { temperature: Math.max(temperature, 0.7), seed: attempt }),
      ...(responseFormat ? { response_format: responseFormat } : {}),
    };
  }

  /** The cache key of a request: its whole body (model, messages, sampling, format) and which attempt it is. */
  cacheKey(messages: readonly ChatMessageIn[], attempt: number, responseFormat?: unknown): string {
    return createHash('sha256').update(JSON.stringify({ ...this.body(messages, attempt, responseFormat), attempt })).digest('hex');
  }

  private cacheFile(key: string): string {
    if (this.options.cacheDir === undefined) throw new Error('CachedChatClient: chat completions need a cacheDir');
    return path.join(this.options.cacheDir, key.slice(0, 2), `${key}.json`);
  }

  /** One completion: from the cache, or asked (with retries) and then cached. */
  complete(messages: readonly ChatMessageIn[], attempt = 0, responseFormat?: unknown): Promise<LlmAnswer> {
    return this.limit(async () => {
      const key = this.cacheKey(messages, attempt, responseFormat);
      const file = this.cacheFile(key);
      const hit = await fs.readFile(file, 'utf8').then((text) => JSON.parse(text) as { text: string; usage: LlmUsage }, () => null);
      if (hit) {
        this.totals.cached++;
        return { text: hit.text, usage: hit.usage, cached: true, requests: 0 };
      }
      const answer = { ...(await this.ask('/chat/completions', this.body(messages, attempt, responseFormat), parseCompletion)), cached: false };
      await fs.mkdir(path.dirname(file), { recursive: true });
      // Not fsynced: a cache entry lost to a power cut is only asked again.
      await writeFileAtomic(file, JSON.stringify({ request: { ...this.body(messages, attempt, responseFormat), attempt }, text: answer.text, usage: answer.usage }), { sync: false });
      return answer;
    });
  }

  /**
   * One legacy completion (`POST {endpoint}/completions`): `body` with the client's model, under the same
   * concurrency limit and retries as chat; not cached.
   */
  textCompletion(body: Record<string, unknown>): Promise<TextCompletionAnswer> {
    return this.limit(() => this.ask('/completions', { model: this.options.model, ...body }, parseTextCompletion));
  }

  private async ask<T extends { usage: LlmUsage }>(route: string, body: unknown, parse: (text: string) => T): Promise<T & { requests: number }> {
    const { endpoint, apiKey, retries = 6, timeoutMs = 120_000, backoffMs = 1000, maxBackoffMs = 60_000 } = this.options;
    const url = `${endpoint.replace(/\/+$/, '')}${route}`;
    let lastError: LlmRequestError | null = null;
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (attempt > 0) this.totals.retries++;
      this.totals.requests++;
      let waitMs: number | null = null;
      try {
        const response = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(timeoutMs),
        });
        const text = await response.text();
        if (response.ok) {
          const parsed = parse(text);
          this.totals.promptTokens += parsed.usage.prompt_tokens;
          this.totals.completionTokens += parsed.usage.completion_tokens;
          return { ...parsed, requests: attempt + 1 };
        }
        const retryable = response.status === 429 || response.status === 408 || response.status >= 500;
        lastError = new LlmRequestError(`${url} answered ${response.status}: ${text.slice(0, 300)}`, response.status, retryable);
        if (!retryable) break;
        waitMs = retryAfterMs(response.headers);
      } catch (error) {
        if (error instanceof LlmRequestError) {
          lastError = error;
          if (!error.retryable) break;
        } else {
          const name = (error as Error).name;
          const reason = name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (error as Error).message;
          lastError = new LlmRequestError(`${url}: ${reason}`, null, true);
        }
      }
      if (attempt < retries) {
        // Exponential backoff with full jitter, unless the server said how long to wait.
        const backoff = Math.min(maxBackoffMs, backoffMs * 2 ** attempt) * this.random();
        await this.sleep(waitMs ?? backoff);
      }
    }
    this.totals.failed++;
    throw lastError ?? new LlmRequestError(`${url}: failed`, null, false);
  }
}

/** The assistant text and usage of an OpenAI chat-completions response body. */
function parseCompletion(body: string): { text: string; usage: LlmUsage } {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw new LlmRequestError(`the endpoint's response is not JSON: ${body.slice(0, 200)}`, 200, true);
  }
  const choice = (json as { choices?: { message?: { content?: unknown } }[] }).choices?.[0];
  const content = choice?.message?.content;
  if (typeof content !== 'string') throw new LlmRequestError(`the endpoint's response has no choices[0].message.content: ${body.slice(0, 200)}`, 200, true);
  const usage = (json as { usage?: Partial<LlmUsage> }).usage ?? {};
  return { text: content, usage: { prompt_tokens: usage.prompt_tokens ?? 0, completion_tokens: usage.completion_tokens ?? 0 } };
}

/** choices[0]'s text, finish and stop reasons, and the usage of a legacy completions response body. */
function parseTextCompletion(body: string): Omit<TextCompletionAnswer, 'requests'> {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw new LlmRequestError(`the endpoint's response is not JSON: ${body.slice(0, 200)}`, 200, true);
  }
  const choice = (json as { choices?: { text?: unknown; finish_reason?: unknown; stop_reason?: unknown }[] }).choices?.[0];
  if (typeof choice?.text !== 'string') throw new LlmRequestError(`the endpoint's response has no choices[0].text: ${body.slice(0, 200)}`, 200, true);
  const usage = (json as { usage?: Partial<LlmUsage> }).usage ?? {};
  const stopReason = typeof choice.stop_reason === 'number' || typeof choice.stop_reason === 'string' ? choice.stop_reason : null;
  return {
    text: choice.text,
    finishReason: typeof choice.finish_reason === 'string' ? choice.finish_reason : null,
    stopReason,
    usage: { prompt_tokens: usage.prompt_tokens ?? 0, completion_tokens: usage.completion_tokens ?? 0 },
  };
}
