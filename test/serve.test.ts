// `rank1 serve` over real HTTP with the official `openai` npm client, on the shipped toy base: answers equal
// rank1's own generate, streaming equals non-streaming, concurrent requests batch together, bad requests get
// OpenAI-shaped errors with the right status, shutdown finishes what is in flight; and the CLI end to end.
import * as path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { loadChatTemplate, renderChat } from '../src/model/chat-template.ts';
import { loadQwen2Checkpoint } from '../src/model/load.ts';
import { generate } from '../src/model/generate.ts';
import type { Qwen2Model } from '../src/model/qwen2.ts';
import { loadTokenizer, type Tokenizer } from '../src/model/tokenizer.ts';
import { DecodeScheduler } from '../src/serve/scheduler.ts';
import { buildServer, closeGracefully } from '../src/serve/server.ts';
import { StopTextTracker } from '../src/serve/stop-text.ts';
import { prefixStatus } from '../src/serve/json-constraint.ts';
import { ANY_OBJECT } from '../src/serve/json-schema.ts';
import { startServeProcess } from './helpers/serve-process.ts';

const root = path.resolve(import.meta.dirname, '..');
const toy = path.join(root, 'models/toy');

async function startServer(model: Qwen2Model, tokenizer: Tokenizer, template: string, schedulerOptions: { maxBatch?: number; maxQueue?: number } = {}, bodyLimit?: number) {
  const scheduler = new DecodeScheduler(model, schedulerOptions);
  const app = buildServer({ scheduler, tokenizer, chatTemplate: template, modelId: 'toy', contextLength: 1024, bodyLimit });
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, scheduler, baseURL: `${address}/v1` };
}

describe('rank1 serve (OpenAI-compatible, over HTTP)', () => {
  let model: Qwen2Model;
  let tokenizer: Tokenizer;
  let template: string;
  let server: { app: FastifyInstance; scheduler: DecodeScheduler; baseURL: string };
  let client: OpenAI;
  const question = 'What is the last digit of 7 * 8?';

  beforeAll(async () => {
    ({ model } = await loadQwen2Checkpoint(toy, getCpuBackend()));
    tokenizer = (await loadTokenizer(toy))!;
    template = await loadChatTemplate(toy);
    server = await startServer(model, tokenizer, template);
    client = new OpenAI({ baseURL: server.baseURL, apiKey: 'not-needed', maxRetries: 0 });
  });
  afterAll(async () => {
    await server?.app.close();
    model?.dispose();
  });

  /** rank1's own greedy generate on the same chat prompt, as text without the end-of-turn token. */
  async function reference(content: string, maxTokens: number): Promise<{ text: string; ids: number[] }> {
    const prompt = tokenizer.encode(renderChat(template, [{ role: 'user', content }], { addGenerationPrompt: true }), { addSpecialTokens: false });
    const result = await generate(model, prompt, { maxTokens, stopIds: tokenizer.eosTokenIds });
    const ids = result.ids.filter((id) => !tokenizer.eosTokenIds.includes(id));
    return { text: tokenizer.decode(ids, { skipSpecialTokens: true }), ids };
  }

  it('lists the model and answers a chat completion equal to rank1 generate (greedy), with usage', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['toy']);
    const completion = await client.chat.completions.create({ model: 'toy', messages: [{ role: 'user', content: question }], max_tokens: 40, temperature: 0 });
    const want = await reference(question, 40);
    expect(completion.choices[0]!.message.content).toBe(want.text);
    expect(completion.choices[0]!.message.content!.length).toBeGreaterThan(5);
    expect(completion.object).toBe('chat.completion');
    expect(completion.usage!.completion_tokens).toBe(want.ids.length);
    expect(completion.usage!.total_tokens).toBe(completion.usage!.prompt_tokens + completion.usage!.completion_tokens);
    expect(completion.choices[0]!.finish_reason).toBe(want.ids.length < 40 ? 'stop' : 'length');
  });

  it('streams the same text as server-sent events, with a usage chunk on request', async () => {
    const whole = await client.chat.completions.create({ model: 'toy', messages: [{ role: 'user', content: question }], max_tokens: 24, temperature: 0 });
    const stream = await client.chat.completions.create({ model: 'toy', messages: [{ role: 'user', content: question }], max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true } });
    const deltas: string[] = [];
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices[0];
      if (choice?.delta.content) deltas.push(choice.delta.content);
      if (choice?.finish_reason) finish = choice.finish_reason;
    }
    expect(deltas.length).toBeGreaterThan(3); // token by token, not one blob
    expect(deltas.join('')).toBe(whole.choices[0]!.message.content);
    expect(finish).toBe(whole.choices[0]!.finish_reason);
    expect(usage).toEqual(whole.usage);
  });

  it('cuts at a stop sequence (finish_reason "stop"), streaming and not', async () => {
    const full = (await reference(question, 40)).text;
    const stopWord = ' digit';
    expect(full).toContain(stopWord);
    const completion = await client.chat.completions.create({ model: 'toy', messages: [{ role: 'user', content: question }], max_tokens: 40, temperature: 0, stop: [stopWord] });
    expect(completion.choices[0]!.message.content).toBe(full.slice(0, full.indexOf(stopWord)));
    expect(completion.choices[0]!.finish_reason).toBe('stop');
    const stream = await client.chat.completions.create({ model: 'toy', messages: [{ role: 'user', content: question }], max_tokens: 40, temperature: 0, stop: stopWord, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe(full.slice(0, full.indexOf(stopWord)));
  });

  it('structured outputs: response_format json_schema and json_object give parseable JSON even from the toy', async () => {
    const schema = { type: 'object', properties: { explanation: { type: 'string', maxLength: 30 }, class: { enum: [0, 1, 2] }, picks: { type: 'array', items: { type: 'integer', minimum: 1, maximum: 9 }, maxItems: 3 } }, required: ['explanation', 'class', 'picks'], additionalProperties: false };
    for (const temperature of [0, 1]) {
      const completion = await client.chat.completions.create({
        model: 'toy', messages: [{ role: 'user', content: question }], max_tokens: 200, temperature, seed: 5,
        response_format: { type: 'json_schema', json_schema: { name: 'label', schema, strict: true } },
      });
      const value = JSON.parse(completion.choices[0]!.message.content!) as { explanation: string; class: number; picks: number[] };
      expect(Object.keys(value)).toEqual(['explanation', 'class', 'picks']);
      expect(value.explanation.length).toBeLessThanOrEqual(30);
      expect([0, 1, 2]).toContain(value.class);
      expect(value.picks.length).toBeLessThanOrEqual(3);
      for (const n of value.picks) expect(n >= 1 && n <= 9 && Number.isInteger(n)).toBe(true);
      expect(completion.choices[0]!.finish_reason).toBe('stop');
    }
    const stream = await client.chat.completions.create({ model: 'toy', messages: [{ role: 'user', content: question }], max_tokens: 200, temperature: 0, stream: true, response_format: { type: 'json_schema', json_schema: { name: 'label', schema } } });
    let streamed = '';
    for await (const chunk of stream) streamed += chunk.choices[0]?.delta.content ?? '';
    expect(() => JSON.parse(streamed)).not.toThrow();
    // json_object bounds nothing but nesting and whitespace: the document is complete ("stop") or was cut by
    // max_tokens ("length", as OpenAI documents), and then it is a prefix of an object.
    const object = await client.chat.completions.create({ model: 'toy', messages: [{ role: 'user', content: question }], max_tokens: 300, temperature: 0, response_format: { type: 'json_object' } });
    const content = object.choices[0]!.message.content!;
    if (object.choices[0]!.finish_reason === 'stop') {
      const parsed = JSON.parse(content) as unknown;
      expect(typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)).toBe(true);
    } else {
      expect(object.choices[0]!.finish_reason).toBe('length');
      expect(prefixStatus(ANY_OBJECT, content)).toBe('partial');
    }
    await expect(client.chat.completions.create({ model: 'toy', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { d: { type: 'date' } } } } } }))
      .rejects.toMatchObject({ status: 400, code: 'unsupported_schema' });
  });

  it('decodes concurrent requests together; greedy answers equal sequential ones, seeded sampling repeats', async () => {
    const questions = ['What is the last digit of 3 * 9?', 'What is the last digit of 12 + 5?', question, 'What is the last digit of 4 * 4?'];
    const sequential = [];
    for (const q of questions) sequential.push((await reference(q, 20)).text);
    // A server of its own: its scheduler's statistics count this test's requests only.
    const own = await startServer(model, tokenizer, template);
    try {
      const ownClient = new OpenAI({ baseURL: own.baseURL, apiKey: 'not-needed', maxRetries: 0 });
      const sampled = (seed: number) => ownClient.chat.completions.create({ model: 'toy', messages: [{ role: 'user', content: question }], max_tokens: 20, temperature: 1.2, top_p: 0.9, seed });
      const [greedy, a, b] = await Promise.all([
        Promise.all(questions.map((q) => ownClient.chat.completions.create({ model: 'toy', messages: [{ role: 'user', content: q }], max_tokens: 20, temperature: 0 }))),
        sampled(7), sampled(7),
      ]);
      expect(greedy.map((c) => c.choices[0]!.message.content)).toEqual(sequential);
      expect(a.choices[0]!.message.content).toBe(b.choices[0]!.message.content);
      expect(own.scheduler.stats.largestBatch).toBeGreaterThan(1);
    } finally {
      await own.app.close();
    }
  });

  it('answers bad requests with OpenAI-shaped errors: 400, 404 (route and model)', async () => {
    const bad = async (body: unknown) => {
      const response = await fetch(`${server.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
      return { status: response.status, body: await response.json() as { error: { message: string; type: string; param: string | null } } };
    };
    const noMessages = await bad({ model: 'toy', messages: [] });
    expect(noMessages.status).toBe(400);
    expect(noMessages.body.error).toMatchObject({ type: 'invalid_request_error', param: 'messages' });
    const hot = await bad({ model: 'toy', messages: [{ role: 'user', content: 'x' }], temperature: 3 });
    expect(hot.status).toBe(400);
    expect(hot.body.error.param).toBe('temperature');
    const wrongRole = await bad({ model: 'toy', messages: [{ role: 'robot', content: 'x' }] });
    expect(wrongRole.body.error.param).toBe('messages.0.role');
    expect((await bad('{not json')).status).toBe(400);
    const tooLong = await bad({ model: 'toy', messages: [{ role: 'user', content: 'x' }], max_tokens: 5000 });
    expect(tooLong.status).toBe(400);
    expect(tooLong.body.error.message).toMatch(/context of 1024/);
    const n2 = await bad({ model: 'toy', messages: [{ role: 'user', content: 'x' }], n: 2 });
    expect(n2.status).toBe(400);

    await expect(client.chat.completions.create({ model: 'other', messages: [{ role: 'user', content: 'x' }] })).rejects.toMatchObject({ status: 404, code: 'model_not_found' });
    const route = await fetch(`${server.baseURL}/embeddings`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    expect(route.status).toBe(404);
    expect((await route.json() as { error: { type: string } }).error.type).toBe('not_found_error');
  });

  it('answers 413 to an oversized body and 503 when the queue is full', async () => {
    const small = await startServer(model, tokenizer, template, { maxBatch: 1, maxQueue: 0 }, 2000);
    try {
      const big = await fetch(`${small.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'toy', messages: [{ role: 'user', content: 'x'.repeat(5000) }] }) });
      expect(big.status).toBe(413);
      expect((await big.json() as { error: { code: string } }).error.code).toBe('request_too_large');
      // One decoding slot, no queue: of eight requests sent at once, the first is served and the ones that
      // arrive while it decodes get 503.
      const results = await Promise.all(Array.from({ length: 8 }, () => fetch(`${small.baseURL}/chat/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'toy', messages: [{ role: 'user', content: question }], max_tokens: 40, temperature: 0 }),
      }).then(async (r) => ({ status: r.status, body: await r.json() as { error?: { type: string; code: string } } }))));
      const statuses = results.map((r) => r.status);
      expect(statuses).toContain(200);
      expect(statuses).toContain(503);
      expect(statuses.every((s) => s === 200 || s === 503)).toBe(true);
      expect(results.find((r) => r.status === 503)!.body.error).toMatchObject({ type: 'overloaded_error', code: 'queue_full' });
    } finally {
      await small.app.close();
    }
  });

  it('shuts down gracefully: an in-flight generation finishes, then no new request is served', async () => {
    const own = await startServer(model, tokenizer, template);
    const ownClient = new OpenAI({ baseURL: own.baseURL, apiKey: 'x', maxRetries: 0 });
    const inFlight = ownClient.chat.completions.create({ model: 'toy', messages: [{ role: 'user', content: question }], max_tokens: 60, temperature: 1, seed: 3 });
    // Close once the scheduler has taken the request in (not after a fixed sleep, which a loaded machine can outlast).
    for (const deadline = Date.now() + 10_000; own.scheduler.stats.promptTokens === 0 && Date.now() < deadline;) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(own.scheduler.stats.promptTokens).toBeGreaterThan(0);
    const closing = closeGracefully(own.app, own.scheduler);
    const done = await inFlight;
    expect(done.choices[0]!.message.content!.length).toBeGreaterThan(0);
    await closing;
    await expect(fetch(`${own.baseURL}/models`)).rejects.toThrow();
  });
});

describe('StopTextTracker', () => {
  it('holds back a tail that may grow into a stop sequence and never emits past it', () => {
    const pieces = ['Hel', 'lo ', 'wo', 'rld', ' END', ' more'];
    const decode = (ids: readonly number[]) => ids.map((i) => pieces[i]).join('');
    const tracker = new StopTextTracker(decode, [' ENDING', 'rld E']);
    const out: string[] = [];
    for (let n = 1; n <= pieces.length && !tracker.stopped; n++) out.push(tracker.push(Array.from({ length: n }, (_, i) => i)));
    expect(out.join('')).toBe('Hello wo');
    expect(tracker.stopped).toBe(true);
  });
});

describe('rank1 serve (the command)', () => {
  it('prints its address, serves the openai client, and exits 0 on SIGTERM', async () => {
    const { child, baseURL } = await startServeProcess(['--model', toy, '--backend', 'cpu']);
    try {
      const cli = new OpenAI({ baseURL, apiKey: 'x', maxRetries: 0 });
      expect((await cli.models.list()).data[0]!.id).toBe('toy');
      const reply = await cli.chat.completions.create({ model: 'toy', messages: [{ role: 'user', content: 'What is the last digit of 2 + 2?' }], max_tokens: 8, temperature: 0 });
      expect(reply.choices[0]!.message.content!.length).toBeGreaterThan(0);
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 60_000);
});

describe('DecodeScheduler', () => {
  it('refuses beyond maxBatch + maxQueue unfinished requests, frees the slot when one finishes, and drains', async () => {
    const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
    try {
      const scheduler = new DecodeScheduler(model, { maxBatch: 1, maxQueue: 1 });
      const request = (maxTokens: number) => ({ promptIds: [1, 2, 3], maxTokens, temperature: 0, topP: 1, seed: 1, stopIds: [] });
      const first = scheduler.submit(request(30));
      const second = scheduler.submit(request(5));
      expect(() => scheduler.submit(request(5))).toThrow(/busy: 1 requests are already waiting/);
      expect((await first).ids).toHaveLength(30);
      expect((await second).stopReason).toBe('max_tokens');
      const third = scheduler.submit(request(3)); // room again
      await scheduler.drain();
      expect((await third).ids).toHaveLength(3);
      expect(() => scheduler.submit(request(1))).toThrow(/shutting down/);
      const aborted = new AbortController();
      const fresh = new DecodeScheduler(model, { maxBatch: 2 });
      const cancelled = fresh.submit({ ...request(500), signal: aborted.signal, onToken: (_id, generated) => { if (generated.length === 4) aborted.abort(); } });
      expect(await cancelled).toMatchObject({ stopReason: 'aborted' });
      expect((await cancelled).ids.length).toBeLessThan(10);
    } finally {
      model.dispose();
    }
  });
});
