// `POST /v1/completions` (OpenAI's legacy completions, as vLLM serves them): the prompt is raw text — special-
// token text in it *is* tokenized as control tokens, as vLLM does for completions (only chat message content
// is protected) — or token ids, and the continuation comes back as text, whole or streamed. This is what
// `rank1 eval --endpoint` sends: s1's prompt rendered by the client, so no server chat template intervenes.
//
// Honoured: model (the base or a --lora-modules name), prompt (a string or ids, or a list of one), max_tokens
// (OpenAI's default 16), temperature, top_p, stop, seed, stream (+ stream_options.include_usage), echo,
// logprobs (the sampled tokens' log-probabilities under the raw logits, and the top `logprobs` alternatives;
// with echo, prompt tokens are listed with a null log-probability: they are not computed), and vLLM's
// extensions stop_token_ids, skip_special_tokens, include_stop_str_in_output and return_tokens_as_token_ids.
// usage.completion_tokens counts every generated token, a final stop token included (as vLLM counts);
// `stop_reason` is the stop token id or stop string that ended the text (null: none, or max_tokens), as vLLM's.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { z } from 'zod';
import { adapterForModel } from './lora-modules.ts';
import { ApiError, parseRequest, samplingFields, usage, type FinishReason, type Usage } from './protocol.ts';
import { refusalError } from './decoding.ts';
import { PieceQueue, endEventStream, openEventStream } from './event-stream.ts';
import type { DecodeOutcome } from './scheduler.ts';
import type { Serving } from './serving.ts';
import { firstStopAt, StopTextTracker } from './stop-text.ts';
import type { LoraAdapters } from '../model/lora.ts';

const tokenIds = z.array(z.number().int().min(0)).min(1, 'prompt must hold at least one token');

export const completionRequest = z.object({
  model: z.string().min(1),
  prompt: z.union([z.string(), z.array(z.string()).length(1, 'send one prompt per request'), tokenIds, z.array(tokenIds).length(1, 'send one prompt per request')]),
  ...samplingFields,
  echo: z.boolean().nullable().optional(),
  logprobs: z.number().int().min(0).max(20).nullable().optional(),
  best_of: z.number().int().min(1).max(1, 'best_of > 1 is not supported').nullable().optional(),
  suffix: z.string().max(0, 'suffix is not supported').nullable().optional(),
  // vLLM's sampling extensions.
  stop_token_ids: z.array(z.number().int().min(0)).nullable().optional(),
  skip_special_tokens: z.boolean().nullable().optional(),
  include_stop_str_in_output: z.boolean().nullable().optional(),
  spaces_between_special_tokens: z.boolean().nullable().optional(),
  return_tokens_as_token_ids: z.boolean().nullable().optional(),
}).passthrough();

export type CompletionRequest = z.infer<typeof completionRequest>;

/** A completions request checked and tokenized: what one decoding needs. */
export interface PreparedCompletion {
  id: string;
  model: string;
  adapter: LoraAdapters | null;
  promptIds: number[];
  /** The prompt as text (echo). */
  promptText: string;
  maxTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  stops: string[];
  stopIds: number[];
  skipSpecialTokens: boolean;
  includeStop: boolean;
  echo: boolean;
  /** null: no logprobs; k: the sampled token's and the top k alternatives'. */
  logprobs: number | null;
  tokensAsIds: boolean;
  stream: boolean;
  includeUsage: boolean;
  receivedAt: number;
}

export function prepareCompletion(body: unknown, serving: Serving, receivedAt = performance.now()): PreparedCompletion {
  const request = parseRequest(completionRequest, body);
  const adapter = adapterForModel(request.model, serving.modelId, serving.loraModules);
  const { tokenizer, contextLength } = serving;
  // A list of one prompt (text or ids) is that prompt.
  const raw = request.prompt;
  const prompt: string | number[] = typeof raw === 'string' ? raw : typeof raw[0] === 'number' ? (raw as number[]) : (raw[0] as string | number[]);
  let promptIds: number[];
  let promptText: string;
  if (typeof prompt === 'string') {
    if (prompt.length === 0) throw new ApiError(400, 'prompt is empty', 'invalid_request_error', 'prompt', 'invalid_value');
    // The model sees at least one token per character's worth of its longest token: refuse before encoding a huge text.
    if (prompt.length > contextLength * serving.longestTokenChars) throw new ApiError(400, `the prompt's ${prompt.length} characters cannot fit this model's context of ${contextLength} tokens`, 'invalid_request_error', 'prompt', 'context_length_exceeded');
    promptIds = tokenizer.encode(prompt, { addSpecialTokens: false });
    promptText = prompt;
  } else {
    const vocab = serving.scheduler.model.dims.vocab;
    const outside = prompt.find((id) => id >= vocab);
    if (outside !== undefined) throw new ApiError(400, `prompt token ${outside} is outside the vocabulary [0, ${vocab})`, 'invalid_request_error', 'prompt', 'invalid_value');
    promptIds = prompt;
    promptText = tokenizer.decode(prompt);
  }
  const room = contextLength - promptIds.length;
  if (room < 1) throw new ApiError(400, `the prompt is ${promptIds.length} tokens; this model's context is ${contextLength}`, 'invalid_request_error', 'prompt', 'context_length_exceeded');
  const maxTokens = request.max_tokens ?? 16;
  if (maxTokens > room) throw new ApiError(400, `max_tokens ${maxTokens} plus the prompt's ${promptIds.length} tokens exceed this model's context of ${contextLength}`, 'invalid_request_error', 'max_tokens', 'context_length_exceeded');
  const stops = request.stop == null ? [] : typeof request.stop === 'string' ? [request.stop] : request.stop;
  return {
    id: `cmpl-${randomBytes(12).toString('hex')}`,
    model: request.model,
    adapter,
    promptIds,
    promptText,
    maxTokens,
    temperature: request.temperature ?? 1,
    topP: request.top_p ?? 1,
    seed: request.seed ?? Math.floor(Math.random() * 2 ** 31),
    stops: stops.filter((s) => s.length > 0),
    stopIds: [...new Set([...serving.stopIds, ...(request.stop_token_ids ?? [])])],
    skipSpecialTokens: request.skip_special_tokens ?? true,
    includeStop: request.include_stop_str_in_output === true,
    echo: request.echo === true,
    logprobs: request.logprobs ?? null,
    tokensAsIds: request.return_tokens_as_token_ids === true,
    stream: request.stream === true,
    includeUsage: request.stream_options?.include_usage === true,
    receivedAt,
  };
}

/** OpenAI's completions logprobs object (per token: its text, log-probability, top alternatives, text offset). */
interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

/** One decoding of a completions request: the text so far (stops applied), logprobs, and the end's report. */
class CompletionDecoding {
  readonly abort = new AbortController();
  readonly stopText: StopTextTracker;
  /** Per generated token: its log-probability and the top alternatives (when logprobs were asked for). */
  readonly chosen: { logprob: number; top: [number, number][] }[] = [];
  readonly decode: (ids: readonly number[]) => string;

  constructor(readonly request: PreparedCompletion, readonly serving: Serving) {
    const { tokenizer } = serving;
    const stopIds = new Set(request.stopIds);
    this.decode = (ids) => tokenizer.decode(ids.filter((id) => !stopIds.has(id)), { skipSpecialTokens: request.skipSpecialTokens });
    this.stopText = new StopTextTracker(this.decode, request.stops);
  }

  submit(onToken: (generated: readonly number[]) => boolean): Promise<DecodeOutcome> {
    const { promptIds, maxTokens, temperature, topP, seed, stopIds, adapter, logprobs, receivedAt } = this.request;
    const timer = this.serving.metrics.requestTimer(receivedAt);
    const outcome = this.serving.scheduler.submit({
      promptIds, maxTokens, temperature, topP, seed, stopIds, adapter, signal: this.abort.signal, onAdmit: timer.admitted,
      onToken: (_id, generated) => {
        timer.token();
        return onToken(generated);
      },
      ...(logprobs === null ? {} : { onLogits: (row: Float32Array, id: number) => this.chosen.push(logprobOf(row, id, logprobs)) }),
    });
    outcome.then(
      (done) => timer.finished(done.stopReason === 'aborted' ? 'abort' : this.finishReason(done), promptIds.length, done.ids.length),
      () => timer.finished('error', promptIds.length, 0),
    );
    return outcome;
  }

  finishReason(outcome: DecodeOutcome): FinishReason {
    return outcome.stopReason === 'max_tokens' && !this.stopText.stopped ? 'length' : 'stop';
  }

  /** vLLM's stop_reason: the stop token id or stop string that ended the text; null otherwise. */
  stopReason(outcome: DecodeOutcome): number | string | null {
    if (outcome.stopReason === 'stop_id') return outcome.ids.at(-1)!;
    if (this.stopText.stopped) {
      const text = this.decode(outcome.ids);
      const at = firstStopAt(text, this.request.stops);
      return this.request.stops.find((s) => text.startsWith(s, at)) ?? null;
    }
    return null;
  }

  /** The completion's text: up to (or, with include_stop_str_in_output, through) the first stop string. */
  text(outcome: DecodeOutcome): string {
    const text = this.decode(outcome.ids);
    const at = firstStopAt(text, this.request.stops);
    if (at < 0) return text;
    const stop = this.request.stops.find((s) => text.startsWith(s, at))!;
    return this.request.includeStop ? text.slice(0, at + stop.length) : text.slice(0, at);
  }

  usage(outcome: DecodeOutcome): Usage {
    return usage(this.request.promptIds.length, outcome.ids.length);
  }

  /**
   * The logprobs object for generated tokens [from, to) (the prompt's first when `withPrompt`), text offsets
   * counted from `offset`.
   */
  logprobsObject(ids: readonly number[], from: number, to: number, offset: number, withPrompt: boolean): CompletionLogprobs | null {
    const { logprobs, promptIds } = this.request;
    if (logprobs === null) return null;
    const result: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
    let at = offset;
    const add = (id: number, logprob: number | null, top: [number, number][] | null) => {
      const piece = this.serving.tokenizer.decode([id], { skipSpecialTokens: this.request.skipSpecialTokens });
      result.tokens.push(this.tokenName(id));
      result.token_logprobs.push(logprob);
      result.top_logprobs.push(top === null ? null : Object.fromEntries(top.map(([t, lp]) => [this.tokenName(t), lp])));
      result.text_offset.push(at);
      at += piece.length;
    };
    if (withPrompt) for (const id of promptIds) add(id, null, null);
    for (let k = from; k < to; k++) {
      const entry = this.chosen[k];
      add(ids[k]!, entry?.logprob ?? null, entry ? entry.top : null);
    }
    return result;
  }

  private tokenName(id: number): string {
    return this.request.tokensAsIds ? `token_id:${id}` : this.serving.tokenizer.decode([id]);
  }
}

/** log softmax(row)[id] and the `k` most likely tokens' log-probabilities (raw logits, as vLLM reports). */
function logprobOf(row: Float32Array, id: number, k: number): { logprob: number; top: [number, number][] } {
  let max = -Infinity;
  for (const v of row) if (v > max) max = v;
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  const logZ = max + Math.log(sum);
  const top: [number, number][] = [];
  if (k > 0) {
    for (let t = 0; t < row.length; t++) {
      const v = row[t]!;
      if (top.length < k || v > top[top.length - 1]![1]) {
        top.push([t, v]);
        top.sort((a, b) => b[1] - a[1] || a[0] - b[0]);
        if (top.length > k) top.pop();
      }
    }
  }
  return { logprob: row[id]! - logZ, top: top.map(([t, v]) => [t, v - logZ]) };
}

function completionObject(request: PreparedCompletion, text: string, logprobs: CompletionLogprobs | null, finishReason: FinishReason | null, stopReason: number | string | null) {
  return {
    id: request.id, object: 'text_completion', created: Math.floor(Date.now() / 1000), model: request.model, system_fingerprint: 'rank1',
    choices: [{ index: 0, text, logprobs, finish_reason: finishReason, stop_reason: stopReason }],
  };
}

async function respondCompletion(request: PreparedCompletion, serving: Serving, reply: FastifyReply) {
  const decoding = new CompletionDecoding(request, serving);
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) decoding.abort.abort();
  });
  const watchStops = request.stops.length > 0;
  let outcome: DecodeOutcome;
  try {
    outcome = await decoding.submit((generated) => {
      if (watchStops) decoding.stopText.push(generated);
      return decoding.stopText.stopped;
    });
  } catch (error) {
    throw refusalError(error);
  }
  const text = decoding.text(outcome);
  const prefix = request.echo ? request.promptText : '';
  return {
    ...completionObject(request, prefix + text, decoding.logprobsObject(outcome.ids, 0, outcome.ids.length, 0, request.echo), decoding.finishReason(outcome), decoding.stopReason(outcome)),
    usage: decoding.usage(outcome),
  };
}

/** Server-sent events: a chunk per batch of new text (held back while it could become a stop string), a last one with the finish reason, usage if asked, `[DONE]`. */
async function streamCompletion(request: PreparedCompletion, serving: Serving, reply: FastifyReply): Promise<FastifyReply> {
  const decoding = new CompletionDecoding(request, serving);
  // Each piece with the generated-token range it came from (for its logprobs).
  const pieces = new PieceQueue<{ text: string; from: number; to: number }>();
  let sentIds = 0;
  let generatedIds: readonly number[] = [];
  let sentChars = request.echo ? request.promptText.length : 0;
  let outcomePromise: Promise<DecodeOutcome>;
  try {
    outcomePromise = decoding.submit((generated) => {
      generatedIds = generated;
      const delta = decoding.stopText.push(generated);
      if (delta) {
        pieces.push({ text: delta, from: sentIds, to: generated.length });
        sentIds = generated.length;
      }
      return decoding.stopText.stopped;
    });
  } catch (error) {
    throw refusalError(error);
  }
  const send = openEventStream(reply, decoding.abort);
  const sendText = (text: string, from: number, to: number) => {
    send(completionObject(request, text, decoding.logprobsObject(generatedIds, from, to, sentChars, false), null, null));
    sentChars += text.length;
  };
  if (request.echo) send(completionObject(request, request.promptText, decoding.logprobsObject([], 0, 0, 0, true), null, null));
  await pieces.drainUntil(outcomePromise, (batch) => sendText(batch.map((p) => p.text).join(''), batch[0]!.from, batch.at(-1)!.to));
  return endEventStream(reply, send, outcomePromise, (outcome) => {
    const tail = decoding.stopText.push(outcome.ids, true);
    if (tail) sendText(tail, sentIds, outcome.ids.length);
    send(completionObject(request, '', null, decoding.finishReason(outcome), decoding.stopReason(outcome)));
    if (request.includeUsage) send({ ...completionObject(request, '', null, null, null), choices: [], usage: decoding.usage(outcome) });
  });
}

/** Adds POST /v1/completions to a server built by buildServer. */
export function registerCompletions(app: FastifyInstance, serving: Serving): void {
  app.post('/v1/completions', async (request, reply) => {
    const prepared = prepareCompletion(request.body, serving);
    return prepared.stream ? streamCompletion(prepared, serving, reply) : respondCompletion(prepared, serving, reply);
  });
}
