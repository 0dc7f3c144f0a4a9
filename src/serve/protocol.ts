// The wire format of `rank1 serve` (OpenAI's chat-completions API), in one place as vLLM keeps it in
// `protocol.py`: the request schema (zod; the fields rank1 honours are checked, other OpenAI fields are
// accepted and ignored), the error shape `{"error": {"message", "type", "param", "code"}}` with its HTTP
// status, and the response objects — a whole completion, a streamed chunk, the usage chunk.
import { z } from 'zod';

export type ErrorType = 'invalid_request_error' | 'not_found_error' | 'server_error' | 'overloaded_error';

/** An error the client sees: its HTTP status and OpenAI's error fields. */
export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly type: ErrorType, readonly param: string | null = null, readonly code: string | null = null) {
    super(message);
  }
}

/** The response body of an error (and the `data:` event a failed stream ends with). */
export function errorBody(error: ApiError): { error: { message: string; type: ErrorType; param: string | null; code: string | null } } {
  return { error: { message: error.message, type: error.type, param: error.param, code: error.code } };
}

const textPart = z.object({ type: z.literal('text'), text: z.string() });
const message = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  // A string, or OpenAI's list of content parts (text only: this model reads no images).
  content: z.union([z.string(), z.array(textPart)]).nullable().optional(),
  name: z.string().nullable().optional(),
}).passthrough();

export type RequestMessage = z.infer<typeof message>;

/** The sampling and delivery fields both endpoints take (chat completions and completions). */
export const samplingFields = {
  max_tokens: z.number().int().min(1).nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullable().optional(),
  seed: z.number().int().nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().nullable().optional() }).nullable().optional(),
  n: z.number().int().min(1).max(1, 'n > 1 is not supported: send one request per completion').nullable().optional(),
};

/** The chat-completions request: the fields rank1 honours are checked; other OpenAI fields are accepted and ignored. */
export const chatCompletionRequest = z.object({
  model: z.string().min(1),
  messages: z.array(message).min(1, 'messages must hold at least one message'),
  ...samplingFields,
  max_completion_tokens: z.number().int().min(1).nullable().optional(),
  tools: z.array(z.unknown()).max(0, 'tools are not supported by rank1 serve').nullable().optional(),
  response_format: z.discriminatedUnion('type', [
    z.object({ type: z.literal('text') }),
    z.object({ type: z.literal('json_object') }),
    z.object({ type: z.literal('json_schema'), json_schema: z.object({ name: z.string().nullable().optional(), schema: z.unknown(), strict: z.boolean().nullable().optional() }) }),
  ]).nullable().optional(),
}).passthrough();

export type ChatCompletionRequest = z.infer<typeof chatCompletionRequest>;

/** A request body checked against a schema; the first problem becomes a 400 naming its field. */
export function parseRequest<T extends z.ZodType>(schema: T, body: unknown): z.infer<T> {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const param = issue.path.length ? issue.path.map(String).join('.') : null;
  throw new ApiError(400, param ? `${param}: ${issue.message}` : issue.message, 'invalid_request_error', param, 'invalid_value');
}

/** The chat-completions request body checked (see parseRequest). */
export const parseChatCompletionRequest = (body: unknown): ChatCompletionRequest => parseRequest(chatCompletionRequest, body);

export type FinishReason = 'stop' | 'length';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usage(promptTokens: number, completionTokens: number): Usage {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

const now = () => Math.floor(Date.now() / 1000);

/** The non-streaming response (`object: "chat.completion"`). */
export function chatCompletion(id: string, model: string, content: string, finishReason: FinishReason, tokens: Usage) {
  return {
    id, object: 'chat.completion', created: now(), model, system_fingerprint: 'rank1',
    choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, logprobs: null, finish_reason: finishReason }],
    usage: tokens,
  };
}

/** One server-sent event of a streamed response (`object: "chat.completion.chunk"`). */
export function chatCompletionChunk(id: string, model: string, delta: { role?: 'assistant'; content?: string }, finishReason: FinishReason | null) {
  return {
    id, object: 'chat.completion.chunk', created: now(), model, system_fingerprint: 'rank1',
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
  };
}

/** The last chunk when `stream_options.include_usage` asks for it: no choices, the usage. */
export function usageChunk(id: string, model: string, tokens: Usage) {
  return { ...chatCompletionChunk(id, model, {}, null), choices: [], usage: tokens };
}
