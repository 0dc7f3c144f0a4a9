// `POST /v1/completions` on `rank1 serve` (toy base, over HTTP with fetch and the official `openai` client):
// raw prompt text (special-token text becomes control tokens, as vLLM's completions), token-id prompts, greedy
// answers equal rank1's generate, streaming equals the whole answer, echo, logprobs of the sampled tokens,
// stop strings, vLLM's stop_token_ids / skip_special_tokens / stop_reason, usage, seeds, and 400s.
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
import { buildServer } from '../src/serve/server.ts';

const toy = path.resolve(import.meta.dirname, '..', 'models/toy');

describe('rank1 serve: POST /v1/completions', () => {
  let model: Qwen2Model;
  let tokenizer: Tokenizer;
  let app: FastifyInstance;
  let baseURL: string;
  let client: OpenAI;
  let prompt: string;

  beforeAll(async () => {
    ({ model } = await loadQwen2Checkpoint(toy, getCpuBackend()));
    tokenizer = (await loadTokenizer(toy))!;
    const template = await loadChatTemplate(toy);
    prompt = `${renderChat(template, [{ role: 'user', content: 'What is 3 + 4?' }], { addGenerationPrompt: true })}<|im_start|>think`;
    app = buildServer({ scheduler: new DecodeScheduler(model), tokenizer, chatTemplate: template, modelId: 'toy', contextLength: 1024 });
    baseURL = `${await app.listen({ port: 0, host: '127.0.0.1' })}/v1`;
    client = new OpenAI({ baseURL, apiKey: 'not-needed', maxRetries: 0 });
  });
  afterAll(async () => {
    await app?.close();
    model?.dispose();
  });

  const post = (body: unknown) => fetch(`${baseURL}/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  it('tokenizes prompt text with special-token text as control tokens, and answers as rank1 generate does (greedy)', async () => {
    const ids = tokenizer.encode(prompt, { addSpecialTokens: false });
    expect(ids).toContain(tokenizer.tokenToId('<|im_start|>')); // control tokens, not their characters
    const reference = await generate(model, ids, { maxTokens: 24, stopIds: tokenizer.stopIds() });
    const answer = await client.completions.create({ model: 'toy', prompt, max_tokens: 24, temperature: 0 });
    const { ids: refIds } = reference;
    const kept = refIds.filter((id) => !tokenizer.stopIds().includes(id));
    expect(answer.object).toBe('text_completion');
    expect(answer.choices[0]!.text).toBe(tokenizer.decode(kept, { skipSpecialTokens: true }));
    expect(answer.choices[0]!.finish_reason).toBe(reference.stopReason === 'max_tokens' ? 'length' : 'stop');
    // vLLM's count: every generated token, a final stop token included.
    expect(answer.usage).toEqual({ prompt_tokens: ids.length, completion_tokens: refIds.length, total_tokens: ids.length + refIds.length });
    // The same prompt as token ids (and as a list of one) gives the same answer.
    const byIds = await (await post({ model: 'toy', prompt: ids, max_tokens: 24, temperature: 0 })).json();
    expect(byIds.choices[0].text).toBe(answer.choices[0]!.text);
    const listOfOne = await (await post({ model: 'toy', prompt: [ids], max_tokens: 24, temperature: 0 })).json();
    expect(listOfOne.choices[0].text).toBe(answer.choices[0]!.text);
  });

  it('keeps special tokens with skip_special_tokens: false, and reports the stop token in stop_reason (vLLM)', async () => {
    const ids = tokenizer.encode(prompt, { addSpecialTokens: false });
    const reference = await generate(model, ids, { maxTokens: 200, stopIds: tokenizer.stopIds() });
    const body = await (await post({ model: 'toy', prompt, max_tokens: 200, temperature: 0, skip_special_tokens: false, stop_token_ids: tokenizer.stopIds() })).json();
    const choice = body.choices[0];
    const last = reference.ids.at(-1)!;
    if (reference.stopReason === 'stop_id') {
      expect(choice.stop_reason).toBe(last);
      expect(choice.text + tokenizer.decode([last])).toBe(tokenizer.decode(reference.ids));
    } else {
      expect(choice.stop_reason).toBeNull();
      expect(choice.text).toBe(tokenizer.decode(reference.ids));
    }
  });

  it('streams the same text as the whole answer, with usage last when asked', async () => {
    const whole = await client.completions.create({ model: 'toy', prompt, max_tokens: 30, temperature: 0 });
    const stream = await client.completions.create({ model: 'toy', prompt, max_tokens: 30, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish: string | null = null;
    let usage: unknown = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        text += choice.text;
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    expect(text).toBe(whole.choices[0]!.text);
    expect(finish).toBe(whole.choices[0]!.finish_reason);
    expect(usage).toEqual(whole.usage);
  });

  it('echo puts the prompt first; logprobs give each sampled token its log-probability and the top alternatives', async () => {
    const body = await (await post({ model: 'toy', prompt, max_tokens: 6, temperature: 0, logprobs: 2, echo: true })).json();
    const choice = body.choices[0];
    const plain = await client.completions.create({ model: 'toy', prompt, max_tokens: 6, temperature: 0 });
    expect(choice.text).toBe(prompt + plain.choices[0]!.text);
    const promptLength = tokenizer.encode(prompt, { addSpecialTokens: false }).length;
    const { tokens, token_logprobs: logprobs, top_logprobs: top, text_offset: offsets } = choice.logprobs;
    expect(tokens.length).toBe(promptLength + body.usage.completion_tokens);
    expect(logprobs.slice(0, promptLength).every((lp: number | null) => lp === null)).toBe(true);
    for (let k = promptLength; k < tokens.length; k++) {
      expect(logprobs[k]).toBeLessThanOrEqual(0);
      // Greedy: the sampled token is the most likely one, so it heads the alternatives with its own log-probability.
      const best = Object.entries(top[k] as Record<string, number>).sort((a, b) => b[1] - a[1])[0]!;
      expect(best[1]).toBeCloseTo(logprobs[k], 6);
      expect(Object.keys(top[k]).length).toBeLessThanOrEqual(2);
    }
    expect(offsets[0]).toBe(0);
    expect([...offsets].sort((a, b) => a - b)).toEqual(offsets);
    const asIds = await (await post({ model: 'toy', prompt, max_tokens: 3, temperature: 0, logprobs: 0, return_tokens_as_token_ids: true })).json();
    expect(asIds.choices[0].logprobs.tokens.every((t: string) => /^token_id:\d+$/.test(t))).toBe(true);
  });

  it('cuts at a stop string (stop_reason names it), and a seed makes sampling repeatable', async () => {
    const whole = (await client.completions.create({ model: 'toy', prompt, max_tokens: 40, temperature: 0 })).choices[0]!.text;
    const stop = whole.slice(5, 7);
    if (stop.length === 2 && !whole.slice(0, 5).includes(stop)) {
      const cut = await (await post({ model: 'toy', prompt, max_tokens: 40, temperature: 0, stop: [stop] })).json();
      expect(cut.choices[0].text).toBe(whole.slice(0, whole.indexOf(stop)));
      expect(cut.choices[0].finish_reason).toBe('stop');
      expect(cut.choices[0].stop_reason).toBe(stop);
    }
    const sample = () => client.completions.create({ model: 'toy', prompt, max_tokens: 12, temperature: 1, top_p: 0.9, seed: 7 });
    expect((await sample()).choices[0]!.text).toBe((await sample()).choices[0]!.text);
  });

  it('refuses bad requests with OpenAI-shaped errors', async () => {
    const cases: [unknown, number, string | null][] = [
      [{ model: 'toy' }, 400, 'prompt'],
      [{ model: 'toy', prompt: '' }, 400, 'prompt'],
      [{ model: 'toy', prompt: [1, 2, 10 ** 9] }, 400, 'prompt'],
      [{ model: 'toy', prompt: 'hi', max_tokens: 10 ** 6 }, 400, 'max_tokens'],
      [{ model: 'toy', prompt: 'hi', n: 2 }, 400, 'n'],
      [{ model: 'nope', prompt: 'hi' }, 404, 'model'],
    ];
    for (const [body, status, param] of cases) {
      const response = await post(body);
      expect(response.status, JSON.stringify(body)).toBe(status);
      expect((await response.json()).error.param).toBe(param);
    }
  });
});
