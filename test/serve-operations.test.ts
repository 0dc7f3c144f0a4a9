// `rank1 serve` as an operator runs it (issue 20): clients that go away are cancelled (streamed or not) and
// leave the decode loop within a step; shutdown closes idle keep-alive sockets at once and ends what is still
// running after --shutdown-timeout with an error chunk; every error, the framework's and Node's own included,
// is OpenAI-shaped, 503s carry Retry-After, optional fields take null; GET /health and GET /metrics
// (Prometheus text) move with requests. Every server binds 127.0.0.1; every wait is bounded.
import * as http from 'node:http';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { loadChatTemplate } from '../src/model/chat-template.ts';
import { loadQwen2Checkpoint } from '../src/model/load.ts';
import type { Qwen2Model } from '../src/model/qwen2.ts';
import { loadTokenizer, type Tokenizer } from '../src/model/tokenizer.ts';
import { DecodeScheduler, type SchedulerOptions } from '../src/serve/scheduler.ts';
import { buildServer, closeGracefully } from '../src/serve/server.ts';
import { SCREEN_SLICE_CHARS, slices } from '../src/serve/screen.ts';
import fc from 'fast-check';
import { startServeProcess } from './helpers/serve-process.ts';

const root = path.resolve(import.meta.dirname, '..');
const toy = path.join(root, 'models/toy');
const question = 'What is the last digit of 7 * 8?';

interface OwnServer { app: ReturnType<typeof buildServer>; scheduler: DecodeScheduler; base: string }

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return true;
}

/** One HTTP exchange over node:http (an agent of the caller's, raw headers): status, headers, body text. */
function exchange(url: string, options: http.RequestOptions & { body?: string } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(url, { method: options.body === undefined ? 'GET' : 'POST', ...options, headers: { 'content-type': 'application/json', ...options.headers } }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers, text }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(options.body);
  });
}

const chatBody = (extra: Record<string, unknown> = {}) => JSON.stringify({ model: 'toy', messages: [{ role: 'user', content: question }], max_tokens: 4, temperature: 0, ...extra });
/** A long answer the toy cannot end early (its own answers end in ~15 tokens): an array of at least 1000 digits. */
const longAnswer = (maxTokens: number, seed: number, extra: Record<string, unknown> = {}) => chatBody({
  max_tokens: maxTokens, temperature: 1, seed, ...extra,
  response_format: { type: 'json_schema', json_schema: { name: 'digits', schema: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 9 }, minItems: 1000 } } },
});

function expectOpenAiError(text: string, type: string): { message: string; type: string; param: unknown; code: unknown } {
  const body = JSON.parse(text) as { error: { message: string; type: string; param: unknown; code: unknown } };
  expect(Object.keys(body)).toEqual(['error']);
  expect(body.error).toMatchObject({ type });
  expect(typeof body.error.message).toBe('string');
  expect(body.error).toHaveProperty('param');
  expect(body.error).toHaveProperty('code');
  return body.error;
}

describe('rank1 serve under real clients (issue 20)', () => {
  let model: Qwen2Model;
  let tokenizer: Tokenizer;
  let template: string;
  const servers: OwnServer[] = [];

  async function startServer(schedulerOptions: SchedulerOptions = {}, contextLength = 1024): Promise<OwnServer> {
    const scheduler = new DecodeScheduler(model, schedulerOptions);
    const app = buildServer({ scheduler, tokenizer, chatTemplate: template, modelId: 'toy', contextLength });
    const address = await app.listen({ port: 0, host: '127.0.0.1' });
    const server = { app, scheduler, base: address };
    servers.push(server);
    return server;
  }

  beforeAll(async () => {
    ({ model } = await loadQwen2Checkpoint(toy, getCpuBackend()));
    tokenizer = (await loadTokenizer(toy))!;
    template = await loadChatTemplate(toy);
  });
  afterAll(async () => {
    for (const server of servers) await server.app.close();
    model?.dispose();
  });

  it('cancels non-streaming requests whose clients went away: they leave within a step, free their KV cache, and a fresh request decodes alone', async () => {
    const own = await startServer({ maxBatch: 8, maxQueue: 64 });
    const clients = 16;
    // Long answers (900 tokens each) that nobody waits for: the clients give up once all of them are in the
    // scheduler (not after a fixed time, which on a loaded machine can run out before the requests arrive).
    const controllers = Array.from({ length: clients }, () => new AbortController());
    const going = Promise.all(controllers.map((controller, seed) => fetch(`${own.base}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, signal: controller.signal,
      body: longAnswer(900, seed),
    }).then(() => 'answered', () => 'gave up')));
    expect(await waitFor(() => own.scheduler.active + own.scheduler.queued === clients, 15_000)).toBe(true);
    for (const controller of controllers) controller.abort();
    expect(await going).toEqual(Array(clients).fill('gave up'));
    // Bounded wait: 16 × 900 tokens generated for nobody would take far longer than this.
    expect(await waitFor(() => own.scheduler.active + own.scheduler.queued === 0, 15_000)).toBe(true);
    expect(own.scheduler.stats.aborted).toBe(clients);
    expect(own.scheduler.stats.maxStepsAfterAbort).toBeLessThanOrEqual(1);
    expect(own.scheduler.kvCacheBytes).toBe(0);
    const before = { ...own.scheduler.stats };
    const fresh = await exchange(`${own.base}/v1/chat/completions`, { body: chatBody({ max_tokens: 8 }) });
    expect(fresh.status).toBe(200);
    const after = own.scheduler.stats;
    // Every step since was the fresh request's alone (one sequence per step): no abandoned one shared it.
    expect(after.steps).toBeGreaterThan(before.steps);
    expect(after.sequenceSteps - before.sequenceSteps).toBe(after.steps - before.steps);
  }, 60_000);

  it('cancels a stream whose client went away within a step', async () => {
    const own = await startServer();
    const controller = new AbortController();
    const response = await fetch(`${own.base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: longAnswer(900, 1, { stream: true }), signal: controller.signal });
    const reader = response.body!.getReader();
    await reader.read();
    controller.abort();
    expect(await waitFor(() => own.scheduler.active + own.scheduler.queued === 0, 15_000)).toBe(true);
    expect(own.scheduler.stats).toMatchObject({ aborted: 1 });
    expect(own.scheduler.stats.maxStepsAfterAbort).toBeLessThanOrEqual(1);
    expect(own.scheduler.kvCacheBytes).toBe(0);
  }, 30_000);

  it('shutdown: after --shutdown-timeout an in-flight stream ends with an error chunk and [DONE], a whole answer with 503', async () => {
    const own = await startServer();
    const response = await fetch(`${own.base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: longAnswer(900, 2, { stream: true }) });
    const whole = exchange(`${own.base}/v1/chat/completions`, { body: longAnswer(900, 3) });
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = decoder.decode((await reader.read()).value);
    expect(await waitFor(() => own.scheduler.active === 2, 10_000)).toBe(true);
    const closing = closeGracefully(own.app, own.scheduler, { timeoutMs: 200 });
    for (let part = await reader.read(); !part.done; part = await reader.read()) text += decoder.decode(part.value);
    const events = text.split('\n\n').filter(Boolean).map((event) => event.replace(/^data: /, ''));
    expect(events.at(-1), text).toBe("[DONE]");
    const last = JSON.parse(events.at(-2)!) as { error?: { code: string; type: string } };
    expect(last.error, text.slice(-600)).toBeDefined();
    expect(last.error).toMatchObject({ code: 'shutting_down', type: 'overloaded_error' });
    const refused = await whole;
    expect(refused.status).toBe(503);
    expect(expectOpenAiError(refused.text, 'overloaded_error').code).toBe('shutting_down');
    await closing;
    expect(own.scheduler.kvCacheBytes).toBe(0);
  }, 60_000);

  it('answers the framework\'s and Node\'s own errors OpenAI-shaped: 414 long parameter, 400 bad URL, 431 headers too large', async () => {
    const own = await startServer();
    const long = await exchange(`${own.base}/v1/models/${'x'.repeat(500)}`);
    expect(long.status).toBe(414);
    expectOpenAiError(long.text, 'invalid_request_error');
    const badUrl = await exchange(`${own.base}/v1/models/%E0%A4%A`);
    expect(badUrl.status).toBe(400);
    expectOpenAiError(badUrl.text, 'invalid_request_error');
    const bigHeaders = await exchange(`${own.base}/v1/models`, { headers: { 'x-filler': 'y'.repeat(40_000) } });
    expect(bigHeaders.status).toBe(431);
    expectOpenAiError(bigHeaders.text, 'invalid_request_error');
    const unknown = await exchange(`${own.base}/nowhere`);
    expect(unknown.status).toBe(404);
    expectOpenAiError(unknown.text, 'not_found_error');
    const wrongType = await exchange(`${own.base}/v1/chat/completions`, { body: 'x', headers: { 'content-type': 'text/csv' } });
    expect(wrongType.status).toBe(415);
    expectOpenAiError(wrongType.text, 'invalid_request_error');
    const emptyJson = await exchange(`${own.base}/v1/chat/completions`, { body: '' });
    expect(emptyJson.status).toBe(400);
    expectOpenAiError(emptyJson.text, 'invalid_request_error');
    const metrics = (await exchange(`${own.base}/metrics`)).text;
    expect(metrics).toMatch(/^rank1:http_responses_total\{status="414",model_name="toy"\} 1$/m);
  });

  it('sends Retry-After with every 503, and takes null for every optional field', async () => {
    const small = await startServer({ maxBatch: 1, maxQueue: 0 });
    const results = await Promise.all(Array.from({ length: 6 }, () => exchange(`${small.base}/v1/chat/completions`, { body: chatBody({ max_tokens: 40 }) })));
    const busy = results.filter((r) => r.status === 503);
    expect(busy.length).toBeGreaterThan(0);
    for (const r of busy) {
      expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
      expect(expectOpenAiError(r.text, 'overloaded_error').code).toBe('queue_full');
    }
    const own = await startServer();
    const nulls = {
      tools: null, tool_choice: null, parallel_tool_calls: null, stop: null, seed: null, n: null, top_p: null, stream: null,
      stream_options: null, response_format: null, max_completion_tokens: null, user: null, logprobs: null,
      messages: [{ role: 'user', content: question, name: null }],
    };
    const accepted = await exchange(`${own.base}/v1/chat/completions`, { body: chatBody(nulls) });
    expect(accepted.status, accepted.text).toBe(200);
    const nestedNulls = await exchange(`${own.base}/v1/chat/completions`, {
      body: chatBody({ stream: true, stream_options: { include_usage: null }, response_format: { type: 'json_schema', json_schema: { name: null, schema: { type: 'object' }, strict: null } } }),
    });
    expect(nestedNulls.status, nestedNulls.text).toBe(200);
  }, 60_000);

  /** Runs `body` with the tokenizer's encode watched: the longest text it was given in one call. */
  async function watchEncode(body: () => Promise<void>): Promise<number> {
    let longest = 0;
    const encode = tokenizer.encode.bind(tokenizer);
    tokenizer.encode = (text, options) => {
      longest = Math.max(longest, text.length);
      return encode(text, options);
    };
    try {
      await body();
    } finally {
      tokenizer.encode = encode;
      delete (tokenizer as { encode?: unknown }).encode;
    }
    return longest;
  }

  it('refuses a message longer than the context could hold without tokenizing it (1 MB on the toy: the character bound)', async () => {
    const own = await startServer();
    const longest = await watchEncode(async () => {
      const refused = await exchange(`${own.base}/v1/chat/completions`, { body: JSON.stringify({ model: 'toy', messages: [{ role: 'user', content: 'word '.repeat(200_000) }] }) });
      expect(refused.status).toBe(400);
      expect(expectOpenAiError(refused.text, 'invalid_request_error').code).toBe('context_length_exceeded');
    });
    expect(longest).toBe(0);
  });

  it('refuses more messages than the context holds without rendering or tokenizing them', async () => {
    const own = await startServer();
    const longest = await watchEncode(async () => {
      const messages = Array.from({ length: 5000 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: '' }));
      const refused = await exchange(`${own.base}/v1/chat/completions`, { body: JSON.stringify({ model: 'toy', messages }) });
      expect(refused.status).toBe(400);
      expect(expectOpenAiError(refused.text, 'invalid_request_error').code).toBe('context_length_exceeded');
    });
    expect(longest).toBe(0);
  });

  it('counts a long message in slices, the event loop free between them, and refuses it once past the context', async () => {
    // A context of 100 000 tokens lets 600 000 characters past the character bound: they are counted.
    const own = await startServer({}, 100_000);
    const longest = await watchEncode(async () => {
      const refused = await exchange(`${own.base}/v1/chat/completions`, { body: JSON.stringify({ model: 'toy', messages: [{ role: 'system', content: 'x' }, { role: 'user', content: 'word '.repeat(120_000) }] }) });
      expect(refused.status).toBe(400);
      expect(expectOpenAiError(refused.text, 'invalid_request_error').code).toBe('context_length_exceeded');
    });
    expect(longest).toBeGreaterThan(0);
    expect(longest).toBeLessThanOrEqual(SCREEN_SLICE_CHARS);
    // A prompt within the context is still served, through the exact path.
    const served = await exchange(`${own.base}/v1/chat/completions`, { body: JSON.stringify({ model: 'toy', messages: [{ role: 'user', content: 'word '.repeat(2000) }], max_tokens: 2 }) });
    expect(served.status, served.text).toBe(200);
  });

  it('slices: pieces of at most the size that join to the text, cut where the toy tokenizer counts the same tokens', () => {
    // Words of at most 9 characters, each followed by a gap that opens with a space: a cut place every 12
    // characters at most, so windows of 16 and more never cut inside a word.
    const word = fc.stringMatching(/^[a-z0-9,.!?]{1,9}$/);
    const text = fc.array(fc.tuple(word, fc.constantFrom(' ', '  ', ' \n')), { minLength: 1, maxLength: 80 }).map((parts) => parts.map(([w, gap]) => w + gap).join(''));
    fc.assert(fc.property(text, fc.integer({ min: 16, max: 64 }), (whole, size) => {
      const pieces = [...slices(whole, size)];
      expect(pieces.join('')).toBe(whole);
      for (const piece of pieces) expect(piece.length).toBeLessThanOrEqual(size);
      const sliced = pieces.reduce((sum, piece) => sum + tokenizer.encode(piece, { addSpecialTokens: false }).length, 0);
      expect(sliced).toBe(tokenizer.encode(whole, { addSpecialTokens: false }).length);
    }), { numRuns: 200 });
  });

  it('GET /health answers ok; GET /metrics is Prometheus text with vLLM\'s metrics under rank1:, moving with requests', async () => {
    const own = await startServer();
    const health = await exchange(`${own.base}/health`);
    expect(health.status).toBe(200);
    expect(JSON.parse(health.text)).toEqual({ status: 'ok' });
    const before = await scrape(own.base);
    const whole = JSON.parse((await exchange(`${own.base}/v1/chat/completions`, { body: chatBody({ max_tokens: 6 }) })).text) as { usage: { prompt_tokens: number; completion_tokens: number }; choices: { finish_reason: string }[] };
    expect((await exchange(`${own.base}/nowhere`)).status).toBe(404);
    // While a long stream decodes: one request running, its KV cache in use.
    const controller = new AbortController();
    const stream = await fetch(`${own.base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: longAnswer(900, 5, { stream: true }), signal: controller.signal });
    await stream.body!.getReader().read();
    const during = await scrape(own.base);
    expect(during.get('rank1:num_requests_running{model_name="toy"}')).toBe(1);
    expect(during.get('rank1:num_requests_waiting{model_name="toy"}')).toBe(0);
    expect(during.get('rank1:kv_cache_usage_bytes{model_name="toy"}')).toBeGreaterThan(0);
    controller.abort();
    expect(await waitFor(() => own.scheduler.active === 0, 15_000)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const after = await scrape(own.base);
    const moved = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
    const reason = whole.choices[0]!.finish_reason;
    expect(moved(`rank1:request_success_total{finished_reason="${reason}",model_name="toy"}`)).toBe(1);
    expect(moved('rank1:request_success_total{finished_reason="abort",model_name="toy"}')).toBe(1);
    expect(moved('rank1:prompt_tokens_total{model_name="toy"}')).toBe(2 * whole.usage.prompt_tokens);
    expect(moved('rank1:generation_tokens_total{model_name="toy"}')).toBeGreaterThan(whole.usage.completion_tokens);
    expect(moved('rank1:time_to_first_token_seconds_count{model_name="toy"}')).toBe(2);
    expect(moved('rank1:inter_token_latency_seconds_count{model_name="toy"}')).toBeGreaterThanOrEqual(whole.usage.completion_tokens - 1);
    expect(moved('rank1:e2e_request_latency_seconds_count{model_name="toy"}')).toBe(2);
    expect(moved('rank1:request_queue_time_seconds_count{model_name="toy"}')).toBe(2);
    expect(moved('rank1:http_responses_total{status="200",model_name="toy"}')).toBeGreaterThanOrEqual(2);
    expect(moved('rank1:http_responses_total{status="404",model_name="toy"}')).toBe(1);
    expect(after.get('rank1:kv_cache_usage_bytes{model_name="toy"}')).toBe(0);
  }, 60_000);
});

/**
 * GET /metrics parsed as Prometheus' text format 0.0.4: every sample line is `name{labels} value`, every
 * metric has its HELP and TYPE before its samples, histogram buckets are cumulative. Samples keyed by name and
 * labels as written.
 */
async function scrape(base: string): Promise<Map<string, number>> {
  const response = await exchange(`${base}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  const samples = new Map<string, number>();
  const typed = new Map<string, string>();
  const helped = new Set<string>();
  let lastBucket = null as { series: string; value: number } | null;
  for (const line of response.text.split('\n')) {
    if (line === '') continue;
    const comment = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (comment) {
      if (comment[1] === 'HELP') helped.add(comment[2]!);
      else typed.set(comment[2]!, comment[3]!);
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+]+|NaN|[+-]Inf)$/.exec(line);
    expect(sample, line).not.toBeNull();
    const [, name, labels = '', value] = sample!;
    const family = name!.replace(/_(bucket|sum|count)$/, '');
    expect(typed.has(name!) || typed.get(family) === 'histogram', line).toBe(true);
    expect(helped.has(name!) || helped.has(family), line).toBe(true);
    const number = value === '+Inf' ? Infinity : Number(value);
    if (name!.endsWith('_bucket')) {
      const series = name + labels.replace(/le="[^"]*",?/, '');
      if (lastBucket?.series === series) expect(number).toBeGreaterThanOrEqual(lastBucket.value);
      lastBucket = { series, value: number };
    }
    samples.set(name + labels, number);
  }
  for (const name of ['num_requests_running', 'num_requests_waiting', 'kv_cache_usage_bytes', 'prompt_tokens_total', 'generation_tokens_total', 'time_to_first_token_seconds', 'inter_token_latency_seconds', 'e2e_request_latency_seconds', 'request_queue_time_seconds', 'request_success_total', 'http_responses_total']) {
    expect(typed.has(`rank1:${name}`), name).toBe(true);
  }
  return samples;
}

describe('rank1 serve (the command) shutting down', () => {
  it('exits promptly on SIGTERM once the in-flight stream has finished, although a client holds an idle keep-alive socket', async () => {
    const { child, baseURL } = await startServeProcess(['--model', toy, '--backend', 'cpu']);
    const base = baseURL.replace(/\/v1$/, '');
    const idleAgent = new http.Agent({ keepAlive: true });
    const streamAgent = new http.Agent({ keepAlive: true });
    try {
      // The idle client: one request, then its socket stays open (Node's agent keeps it until the server closes it).
      expect((await exchange(`${base}/v1/models`, { agent: idleAgent })).status).toBe(200);
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      let streamEnded = 0;
      const stream = new Promise<string>((resolve, reject) => {
        const request = http.request(`${base}/v1/chat/completions`, { method: 'POST', agent: streamAgent, headers: { 'content-type': 'application/json' } }, (response) => {
          let text = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => {
            if (!text) child.kill('SIGTERM'); // in flight: its first chunk has arrived
            text += chunk;
          });
          response.on('end', () => {
            streamEnded = Date.now();
            resolve(text);
          });
        });
        request.on('error', reject);
        request.end(longAnswer(150, 4, { stream: true }));
      });
      const text = await stream;
      expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
      expect(text).not.toContain('"error"');
      // Before the fix the process waited out the 72 s keep-alive timeout of the idle socket.
      const code = await Promise.race([exited, new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 15_000))]);
      expect(code).toBe(0);
      expect(Date.now() - streamEnded).toBeLessThan(15_000);
    } finally {
      idleAgent.destroy();
      streamAgent.destroy();
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 60_000);

  it('--shutdown-timeout: a stream still running when it runs out ends with an error chunk and [DONE], and the process exits 0', async () => {
    const { child, baseURL } = await startServeProcess(['--model', toy, '--backend', 'cpu', '--shutdown-timeout', '0.2']);
    try {
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      const response = await fetch(`${baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: longAnswer(900, 6, { stream: true }) });
      const reader = response.body!.getReader();
      const decoder = new TextDecoder();
      let text = decoder.decode((await reader.read()).value);
      child.kill('SIGTERM');
      for (let part = await reader.read(); !part.done; part = await reader.read()) text += decoder.decode(part.value);
      const events = text.split('\n\n').filter(Boolean).map((event) => event.replace(/^data: /, ''));
      expect(events.at(-1)).toBe('[DONE]');
      expect((JSON.parse(events.at(-2)!) as { error?: { code: string } }).error?.code, text.slice(-300)).toBe('shutting_down');
      expect(await Promise.race([exited, new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 15_000))])).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 60_000);
});
