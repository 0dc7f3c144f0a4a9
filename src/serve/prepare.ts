// Request preparation for `rank1 serve`: a chat-completions body checked (./protocol.ts), rendered through the
// model's chat template into prompt ids, and turned into the settings one decoding needs — token budget,
// sampling, stop sequences, the structured-outputs schema. Every problem is an ApiError (400 or 404) thrown
// before anything is queued.
import { randomBytes } from 'node:crypto';
import { encodeChat, type ChatMessage } from '../model/chat-template.ts';
import { ANY_OBJECT, compileSchema, SchemaError, type SchemaNode } from './json-schema.ts';
import { ApiError, parseChatCompletionRequest, type ChatCompletionRequest, type RequestMessage } from './protocol.ts';
import type { Serving } from './serving.ts';
import { adapterForModel } from './lora-modules.ts';
import type { LoraAdapters } from '../model/lora.ts';

export interface PreparedRequest {
  /** The completion's id (`chatcmpl-…`), the same in every chunk of a stream. */
  id: string;
  /** When the request arrived (performance.now() milliseconds), for the latency metrics; absent: when submitted. */
  receivedAt?: number;
  promptIds: number[];
  maxTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  /** Stop sequences, empty ones dropped. */
  stops: string[];
  /** Structured outputs' schema, or null for free text. */
  schema: SchemaNode | null;
  stream: boolean;
  includeUsage: boolean;
  /** The model name asked for (the base's or a --lora-modules name), echoed in the response. */
  model?: string;
  /** The adapter that name selects (null: the base). */
  adapter?: LoraAdapters | null;
}

export function prepareRequest(body: unknown, serving: Serving, receivedAt = performance.now()): PreparedRequest {
  const request = parseChatCompletionRequest(body);
  const { modelId, contextLength } = serving;
  const adapter = adapterForModel(request.model, modelId, serving.loraModules);
  const promptIds = promptIdsOf(request.messages, serving);
  const room = contextLength - promptIds.length;
  if (room < 1) throw new ApiError(400, `the prompt is ${promptIds.length} tokens; this model's context is ${contextLength}`, 'invalid_request_error', 'messages', 'context_length_exceeded');
  const asked = request.max_completion_tokens ?? request.max_tokens ?? null;
  if (asked !== null && asked > room) {
    throw new ApiError(400, `max_tokens ${asked} plus the prompt's ${promptIds.length} tokens exceed this model's context of ${contextLength}`, 'invalid_request_error', 'max_tokens', 'context_length_exceeded');
  }
  const stops = request.stop == null ? [] : typeof request.stop === 'string' ? [request.stop] : request.stop;
  const schema = schemaOf(request.response_format);
  return {
    id: `chatcmpl-${randomBytes(12).toString('hex')}`,
    receivedAt,
    promptIds,
    maxTokens: asked ?? Math.min(serving.defaultMaxTokens, room),
    temperature: request.temperature ?? 1,
    topP: request.top_p ?? 1,
    seed: request.seed ?? Math.floor(Math.random() * 2 ** 31),
    stops: stops.filter((stop) => stop.length > 0),
    schema,
    stream: request.stream === true,
    includeUsage: request.stream_options?.include_usage === true,
    model: request.model,
    adapter,
  };
}

export function contentText(content: RequestMessage['content']): string {
  if (content == null) return '';
  return typeof content === 'string' ? content : content.map((part) => part.text).join('');
}

/** The messages through the chat template (with the assistant's turn opened), as token ids. */
function promptIdsOf(requestMessages: readonly RequestMessage[], serving: Serving): number[] {
  const messages: ChatMessage[] = requestMessages.map((m) => ({ role: m.role === 'developer' ? 'system' : m.role, content: contentText(m.content) }));
  try {
    return encodeChat(serving.tokenizer, serving.chatTemplate, messages, { addGenerationPrompt: true });
  } catch (error) {
    throw new ApiError(400, `messages could not be rendered with the chat template: ${(error as Error).message}`, 'invalid_request_error', 'messages');
  }
}

function schemaOf(format: ChatCompletionRequest['response_format']): SchemaNode | null {
  if (format?.type === 'json_object') return ANY_OBJECT;
  if (format?.type !== 'json_schema') return null;
  try {
    return compileSchema(format.json_schema.schema, 'response_format.json_schema.schema');
  } catch (error) {
    throw new ApiError(400, (error as Error).message, 'invalid_request_error', 'response_format', error instanceof SchemaError ? error.code : 'unsupported_schema');
  }
}
