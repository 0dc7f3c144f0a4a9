// `rank1 serve`: an OpenAI-compatible chat-completions server backed by rank1's own engine (Fastify for HTTP,
// zod for request schemas). Routes: GET /v1/models, GET /v1/models/:id, POST /v1/chat/completions
// (non-streaming, and `stream: true` as server-sent events). Requests are rendered through the model's chat
// template, queued, and decoded with continuous batching (./scheduler.ts). Errors are OpenAI-shaped:
// `{"error": {"message", "type", "param", "code"}}` with 400 bad input, 404 unknown route or model, 413 body
// too large, 503 queue full or shutting down.
import { randomBytes } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { z } from 'zod';
import { renderChat, type ChatMessage } from '../model/chat-template.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import { DecodeScheduler, QueueFullError, ShuttingDownError, type DecodeOutcome } from './scheduler.ts';
import { JsonConstraintState } from './json-constraint.ts';
import { ANY_OBJECT, compileSchema, type SchemaNode } from './json-schema.ts';

export interface ServerOptions {
  scheduler: DecodeScheduler;
  tokenizer: Tokenizer;
  chatTemplate: string;
  /** The id clients pass as `model` (and /v1/models lists). */
  modelId: string;
  /** Positions the model supports: prompt + max_tokens must fit. */
  contextLength: number;
  /** Largest request body in bytes (default 1 MiB): larger ones get 413. */
  bodyLimit?: number;
  /** max_tokens when a request gives none (default 512, and never past the context). */
  defaultMaxTokens?: number;
  /** Log requests (Fastify's logger); off by default. */
  logger?: boolean;
}

type ErrorType = 'invalid_request_error' | 'not_found_error' | 'server_error' | 'overloaded_error';

class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly type: ErrorType, readonly param: string | null = null, readonly code: string | null = null) {
    super(message);
  }
}

function sendError(reply: FastifyReply, error: ApiError): FastifyReply {
  return reply.code(error.status).send({ error: { message: error.message, type: error.type, param: error.param, code: error.code } });
}

const textPart = z.object({ type: z.literal('text'), text: z.string() });
const message = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  // A string, or OpenAI's list of content parts (text only: this model reads no images).
  content: z.union([z.string(), z.array(textPart)]).nullable().optional(),
  name: z.string().optional(),
}).passthrough();

/** The chat-completions request: the fields rank1 honours are checked; other OpenAI fields are accepted and ignored. */
export const chatCompletionRequest = z.object({
  model: z.string().min(1),
  messages: z.array(message).min(1, 'messages must hold at least one message'),
  max_tokens: z.number().int().min(1).nullable().optional(),
  max_completion_tokens: z.number().int().min(1).nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullable().optional(),
  seed: z.number().int().nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullable().optional(),
  n: z.number().int().min(1).max(1, 'n > 1 is not supported: send one request per completion').nullable().optional(),
  tools: z.array(z.unknown()).max(0, 'tools are not supported by rank1 serve').optional(),
  response_format: z.discriminatedUnion('type', [
    z.object({ type: z.literal('text') }),
    z.object({ type: z.literal('json_object') }),
    z.object({ type: z.literal('json_schema'), json_schema: z.object({ name: z.string().optional(), schema: z.unknown(), strict: z.boolean().nullable().optional() }) }),
  ]).nullable().optional(),
}).passthrough();

export type ChatCompletionRequest = z.infer<typeof chatCompletionRequest>;

function contentText(content: z.infer<typeof message>['content']): string {
  if (content == null) return '';
  return typeof content === 'string' ? content : content.map((part) => part.text).join('');
}

function zodMessage(error: z.ZodError): { message: string; param: string | null } {
  const issue = error.issues[0]!;
  const param = issue.path.length ? issue.path.map(String).join('.') : null;
  return { message: param ? `${param}: ${issue.message}` : issue.message, param };
}

/**
 * Text seen so far, without a stop sequence or anything after it, holding back a tail that could still grow
 * into a stop sequence (or an incomplete UTF-8 character), so streamed deltas never need taking back.
 */
export class StopTextTracker {
  private sent = 0;
  stopped = false;

  constructor(private readonly decode: (ids: readonly number[]) => string, private readonly stops: readonly string[]) {}

  /** The new text to emit after `generated` (all ids so far); sets `stopped` when a stop sequence appeared. */
  push(generated: readonly number[], final = false): string {
    const text = this.decode(generated);
    let visible = text;
    let cut = -1;
    for (const stop of this.stops) {
      const at = stop ? text.indexOf(stop) : -1;
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      visible = text.slice(0, cut);
      this.stopped = true;
    } else if (!final) {
      let hold = 0;
      for (const stop of this.stops) {
        for (let k = Math.min(stop.length - 1, text.length); k > hold; k--) {
          if (text.endsWith(stop.slice(0, k))) {
            hold = k;
            break;
          }
        }
      }
      visible = text.slice(0, text.length - hold);
      while (visible.endsWith('\uFFFD')) visible = visible.slice(0, -1);
    }
    if (visible.length <= this.sent) return '';
    const delta = visible.slice(this.sent);
    this.sent = visible.length;
    return delta;
  }
}

const completionId = () => `chatcmpl-${randomBytes(12).toString('hex')}`;

export function buildServer(options: ServerOptions): FastifyInstance {
  const { scheduler, tokenizer, chatTemplate, modelId, contextLength } = options;
  const created = Math.floor(Date.now() / 1000);
  const app = Fastify({ bodyLimit: options.bodyLimit ?? 2 ** 20, logger: options.logger ?? false, return503OnClosing: true });
  const stopIds = tokenizer.stopIds();
  const decodeText = (ids: readonly number[]) => tokenizer.decode(ids.filter((id) => !stopIds.includes(id)), { skipSpecialTokens: true });
  const modelObject = { id: modelId, object: 'model', created, owned_by: 'rank1' };
  // Each token's own text for structured outputs' prefix checks; special tokens read as '' and are never allowed.
  const tokenTexts = new Map<number, string>();
  const tokenText = (id: number) => {
    let text = tokenTexts.get(id);
    if (text === undefined) tokenTexts.set(id, (text = tokenizer.decode([id], { skipSpecialTokens: true })));
    return text;
  };

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, _request, reply) => {
    if (error instanceof ApiError) return sendError(reply, error);
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || error.statusCode === 413) {
      return sendError(reply, new ApiError(413, `request body is larger than the server's limit of ${app.initialConfig.bodyLimit} bytes`, 'invalid_request_error', null, 'request_too_large'));
    }
    if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
      return sendError(reply, new ApiError(error.statusCode, error.message, 'invalid_request_error', null, error.code ?? null));
    }
    return sendError(reply, new ApiError(500, `internal error: ${error.message}`, 'server_error'));
  });
  app.setNotFoundHandler((request, reply) => sendError(reply, new ApiError(404, `no route ${request.method} ${request.url}; this server has GET /v1/models and POST /v1/chat/completions`, 'not_found_error', null, 'unknown_route')));

  app.get('/v1/models', async () => ({ object: 'list', data: [modelObject] }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (request) => {
    if (request.params.id !== modelId) throw new ApiError(404, `model "${request.params.id}" not found; this server serves "${modelId}"`, 'not_found_error', 'model', 'model_not_found');
    return modelObject;
  });

  app.post('/v1/chat/completions', async (request, reply) => {
    const parsed = chatCompletionRequest.safeParse(request.body);
    if (!parsed.success) {
      const { message: text, param } = zodMessage(parsed.error);
      throw new ApiError(400, text, 'invalid_request_error', param, 'invalid_value');
    }
    const body = parsed.data;
    if (body.model !== modelId) throw new ApiError(404, `model "${body.model}" not found; this server serves "${modelId}"`, 'not_found_error', 'model', 'model_not_found');
    const messages: ChatMessage[] = body.messages.map((m) => ({ role: m.role === 'developer' ? 'system' : m.role, content: contentText(m.content) }));
    let promptIds: number[];
    try {
      promptIds = tokenizer.encode(renderChat(chatTemplate, messages, { addGenerationPrompt: true }), { addSpecialTokens: false });
    } catch (error) {
      throw new ApiError(400, `messages could not be rendered with the chat template: ${(error as Error).message}`, 'invalid_request_error', 'messages');
    }
    const room = contextLength - promptIds.length;
    if (room < 1) throw new ApiError(400, `the prompt is ${promptIds.length} tokens; this model's context is ${contextLength}`, 'invalid_request_error', 'messages', 'context_length_exceeded');
    const asked = body.max_completion_tokens ?? body.max_tokens ?? null;
    if (asked !== null && asked > room) {
      throw new ApiError(400, `max_tokens ${asked} plus the prompt's ${promptIds.length} tokens exceed this model's context of ${contextLength}`, 'invalid_request_error', 'max_tokens', 'context_length_exceeded');
    }
    const maxTokens = asked ?? Math.min(options.defaultMaxTokens ?? 512, room);
    const stops = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
    const tracker = new StopTextTracker(decodeText, stops.filter((s) => s.length > 0));
    let schema: SchemaNode | null = null;
    const format = body.response_format;
    if (format?.type === 'json_object') schema = ANY_OBJECT;
    else if (format?.type === 'json_schema') {
      try {
        schema = compileSchema(format.json_schema.schema, 'response_format.json_schema.schema');
      } catch (error) {
        throw new ApiError(400, (error as Error).message, 'invalid_request_error', 'response_format', 'unsupported_schema');
      }
    }
    // Structured outputs: the text so far (token texts concatenated), only extended by tokens that keep it a
    // prefix of an accepted document; the sequence ends when the document is complete.
    const structured = schema === null ? null : new JsonConstraintState(schema);
    let documentComplete = false;
    const constraint = structured === null ? {} : {
      allowToken: (_generated: readonly number[], candidate: number) => {
        const piece = tokenText(candidate);
        return piece !== '' && !stopIds.includes(candidate) && !piece.includes('\uFFFD') && structured.statusWith(piece) !== 'invalid';
      },
    };
    const afterToken = (id: number) => {
      if (structured === null) return false;
      documentComplete = structured.accept(tokenText(id)) === 'complete';
      return documentComplete;
    };
    const id = completionId();
    const temperature = body.temperature ?? 1;
    const seed = body.seed ?? Math.floor(Math.random() * 2 ** 31);
    const abort = new AbortController();
    const usage = (outcome: DecodeOutcome) => {
      const completion = outcome.ids.filter((t) => !stopIds.includes(t)).length;
      return { prompt_tokens: promptIds.length, completion_tokens: completion, total_tokens: promptIds.length + completion };
    };
    const finishReason = (outcome: DecodeOutcome) => (outcome.stopReason === 'max_tokens' && !tracker.stopped && !documentComplete ? 'length' : 'stop');

    if (!body.stream) {
      let outcome: DecodeOutcome;
      try {
        // Text is only needed per token to find a stop sequence (decoding every prefix is quadratic).
        const watchStops = stops.some((stop) => stop.length > 0);
        outcome = await submit({ onToken: (id, generated) => {
          if (watchStops) tracker.push(generated);
          return afterToken(id) || tracker.stopped;
        } });
      } catch (error) {
        throw overloadOr(error);
      }
      const text = decodeText(outcome.ids);
      const content = tracker.stopped ? cutAtStop(text, stops) : text;
      return {
        id, object: 'chat.completion', created: Math.floor(Date.now() / 1000), model: modelId, system_fingerprint: 'rank1',
        choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, logprobs: null, finish_reason: finishReason(outcome) }],
        usage: usage(outcome),
      };
    }

    // Streaming: chunks as server-sent events, then `data: [DONE]`.
    const chunk = (delta: Record<string, unknown>, finish: string | null) => ({
      id, object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model: modelId, system_fingerprint: 'rank1',
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    });
    let outcomePromise: Promise<DecodeOutcome>;
    const pending: string[] = [];
    let wake: (() => void) | null = null;
    try {
      outcomePromise = submit({
        onToken: (id, generated) => {
          const complete = afterToken(id);
          const delta = tracker.push(generated, complete);
          if (delta) {
            pending.push(delta);
            wake?.();
          }
          return complete || tracker.stopped;
        },
      });
    } catch (error) {
      throw overloadOr(error);
    }
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
    raw.on('close', () => abort.abort());
    const send = (data: unknown) => raw.write(`data: ${JSON.stringify(data)}\n\n`);
    send(chunk({ role: 'assistant', content: '' }, null));
    let done = false;
    void outcomePromise.finally(() => {
      done = true;
      wake?.();
    }).catch(() => undefined);
    while (!done || pending.length) {
      if (pending.length) {
        send(chunk({ content: pending.splice(0).join('') }, null));
        continue;
      }
      await new Promise<void>((resolve) => { wake = resolve; });
      wake = null;
    }
    try {
      const outcome = await outcomePromise;
      const tail = tracker.push(outcome.ids, true);
      if (tail) send(chunk({ content: tail }, null));
      send(chunk({}, finishReason(outcome)));
      if (body.stream_options?.include_usage) send({ ...chunk({}, null), choices: [], usage: usage(outcome) });
    } catch (error) {
      send({ error: { message: `generation failed: ${(error as Error).message}`, type: 'server_error', param: null, code: null } });
    }
    raw.end('data: [DONE]\n\n');
    return reply;

    function submit(extra: { onToken: (id: number, generated: readonly number[]) => boolean }): Promise<DecodeOutcome> {
      return scheduler.submit({ promptIds, maxTokens, temperature, topP: body.top_p ?? 1, seed, stopIds, signal: abort.signal, ...constraint, ...extra });
    }
  });

  return app;
}

function overloadOr(error: unknown): Error {
  if (error instanceof QueueFullError) return new ApiError(503, error.message, 'overloaded_error', null, 'queue_full');
  if (error instanceof ShuttingDownError) return new ApiError(503, error.message, 'overloaded_error', null, 'shutting_down');
  if (error instanceof RangeError) return new ApiError(400, error.message, 'invalid_request_error', 'messages');
  return error as Error;
}

function cutAtStop(text: string, stops: readonly string[]): string {
  let cut = text.length;
  for (const stop of stops) {
    const at = stop ? text.indexOf(stop) : -1;
    if (at >= 0 && at < cut) cut = at;
  }
  return text.slice(0, cut);
}

/** Closes the HTTP side (no new connections, 503 to new requests) then lets accepted generations finish. */
export async function closeGracefully(app: FastifyInstance, scheduler: DecodeScheduler): Promise<void> {
  const closing = app.close();
  await scheduler.drain();
  await closing;
}
