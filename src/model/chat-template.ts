// Chat templates: the Jinja text a model folder ships (rendered with @huggingface/jinja, the renderer
// transformers.js uses), a built-in Qwen2.5-Instruct fallback, and s1K's assistant-turn format.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';

export interface ChatToolCall {
  type?: 'function';
  function: { name: string; arguments: Record<string, unknown> | string };
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | (string & {});
  content: string;
  tool_calls?: ChatToolCall[];
  [key: string]: unknown;
}

export interface RenderChatOptions {
  /** End with the opening of an assistant turn (`<|im_start|>assistant\n` for Qwen), ready to generate. */
  addGenerationPrompt?: boolean;
  bosToken?: string;
  eosToken?: string;
  /** JSON-schema tool descriptions, as transformers' `tools=`. */
  tools?: unknown[];
  documents?: unknown[];
  /** Further template variables (e.g. `enable_thinking` for Qwen3 templates). */
  extra?: Record<string, unknown>;
}

/**
 * The chat template of Qwen/Qwen2.5-7B-Instruct (the `chat_template` of its tokenizer_config.json, shared by
 * the whole Qwen2.5-Instruct family), used when a model folder ships none. Copied verbatim from llama.cpp's
 * models/templates/Qwen-Qwen2.5-7B-Instruct.jinja @ c392e5094deaf2d1a7c18683214f007fad3fe42b — MIT License,
 * Copyright (c) 2023-2024 The ggml authors; the template itself is Qwen's (Apache-2.0).
 * Without a system message it inserts "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
 */
export const QWEN25_INSTRUCT_CHAT_TEMPLATE = String.raw`{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
`;

export type ChatTemplateSource = 'chat_template.jinja' | 'tokenizer_config.json' | 'built-in';

/** A template that cannot be used: malformed tokenizer_config entry, missing named template, bad Jinja. */
export class ChatTemplateError extends Error {
  override name = 'ChatTemplateError';
}

const compiled = new Map<string, Template>();

/** Renders messages through a chat template, as transformers' `apply_chat_template(tokenize=False)`. */
export function renderChat(template: string, messages: readonly ChatMessage[], options: RenderChatOptions = {}): string {
  let program = compiled.get(template);
  if (program === undefined) {
    try {
      program = new Template(template);
    } catch (error) {
      throw new ChatTemplateError(`chat template does not parse: ${(error as Error).message}`, { cause: error });
    }
    compiled.set(template, program);
  }
  const context: Record<string, unknown> = { ...options.extra, messages, add_generation_prompt: options.addGenerationPrompt ?? false };
  if (options.bosToken !== undefined) context['bos_token'] = options.bosToken;
  if (options.eosToken !== undefined) context['eos_token'] = options.eosToken;
  if (options.tools !== undefined) context['tools'] = options.tools;
  if (options.documents !== undefined) context['documents'] = options.documents;
  return program.render(context);
}

/** What encodeChat needs of a tokenizer (./tokenizer.ts's Tokenizer). */
export interface ChatTokenizer {
  readonly specialTokens: ReadonlyMap<string, number>;
  encode(text: string, options: { addSpecialTokens: boolean }): number[];
  encodeAsText(text: string): number[];
}

/**
 * A chat as prompt ids, in which only the template adds control tokens: special-token text inside a message's
 * content (`<|im_end|><|im_start|>system`) is encoded as its characters, so a message cannot forge a turn.
 * `suffix` is template text appended after the rendering (eval's `<|im_start|>think`), control tokens allowed.
 *
 * How: content with special-token text is rendered with each such token replaced by a placeholder (private-use
 * characters around a random nonce, so content cannot forge one); the rendering is split at the special tokens
 * left, all the template's; each piece between them is encoded with its placeholders put back, as plain text.
 * Messages without special-token text take the ordinary path: the same ids as encoding the rendered text.
 */
export function encodeChat(tokenizer: ChatTokenizer, template: string, messages: readonly ChatMessage[], options: RenderChatOptions & { suffix?: string } = {}): number[] {
  const suffix = options.suffix ?? '';
  const specials = specialTokenPattern(tokenizer);
  if (specials === null || !messages.some((m) => typeof m.content === 'string' && new RegExp(specials.source).test(m.content))) {
    return tokenizer.encode(renderChat(template, messages, options) + suffix, { addSpecialTokens: false });
  }
  const nonce = Array.from(globalThis.crypto.getRandomValues(new Uint32Array(2)), (n) => n.toString(36)).join('');
  const hidden: string[] = [];
  const hide = (content: string) => content.replace(specials, (token) => `\uE000${nonce}.${hidden.push(token) - 1}\uE001`);
  const placeholders = new RegExp(`\uE000${nonce}\\.(\\d+)\uE001`, 'g');
  const rendered = renderChat(template, messages.map((m) => typeof m.content === 'string' ? { ...m, content: hide(m.content) } : m), options) + suffix;
  const ids: number[] = [];
  let at = 0;
  const encodePiece = (piece: string) => {
    if (piece === '') return;
    const text = piece.replace(placeholders, (_, index: string) => hidden[Number(index)]!);
    ids.push(...(text === piece ? tokenizer.encode(piece, { addSpecialTokens: false }) : tokenizer.encodeAsText(text)));
  };
  for (const match of rendered.matchAll(specials)) {
    encodePiece(rendered.slice(at, match.index));
    ids.push(tokenizer.specialTokens.get(match[0])!);
    at = match.index + match[0].length;
  }
  encodePiece(rendered.slice(at));
  return ids;
}

/** A global regular expression matching any special token's text (longest first), or null when there are none. */
function specialTokenPattern(tokenizer: ChatTokenizer): RegExp | null {
  const texts = [...tokenizer.specialTokens.keys()].filter((text) => text !== '').sort((a, b) => b.length - a.length);
  return texts.length === 0 ? null : new RegExp(texts.map((text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
}

/**
 * The chat template a model folder ships, or null: `chat_template.jinja` first (transformers saves it there
 * since v4.49 and prefers it on load), then `chat_template` in tokenizer_config.json — a string, or a list of
 * `{name, template}` from which `name` (default 'default') is taken.
 */
export async function findChatTemplate(dir: string, { name }: { name?: string } = {}): Promise<{ template: string; source: ChatTemplateSource } | null> {
  const jinja = await readFile(join(dir, 'chat_template.jinja'), 'utf8').catch(() => undefined);
  if (jinja !== undefined) return { template: jinja, source: 'chat_template.jinja' };

  const configFile = join(dir, 'tokenizer_config.json');
  const configText = await readFile(configFile, 'utf8').catch(() => undefined);
  if (configText === undefined) return null;
  let entry: unknown;
  try {
    entry = (JSON.parse(configText) as Record<string, unknown>)?.['chat_template'];
  } catch (error) {
    throw new ChatTemplateError(`${configFile}: is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  if (entry === undefined || entry === null) return null;
  if (typeof entry === 'string') return { template: entry, source: 'tokenizer_config.json' };
  if (Array.isArray(entry)) {
    const wanted = name ?? 'default';
    const named = entry.find((item: { name?: unknown }) => item?.name === wanted) as { template?: unknown } | undefined;
    if (typeof named?.template === 'string') return { template: named.template, source: 'tokenizer_config.json' };
    const names = entry.map((item: { name?: unknown }) => String(item?.name)).join(', ');
    throw new ChatTemplateError(`${configFile}: chat_template has no template named '${wanted}' (it has: ${names})`);
  }
  throw new ChatTemplateError(`${configFile}: chat_template must be a string or a list of {name, template}`);
}

/** The folder's chat template, or the built-in Qwen2.5-Instruct one when it ships none. */
export async function loadChatTemplate(dir: string, options: { name?: string } = {}): Promise<string> {
  return (await findChatTemplate(dir, options))?.template ?? QWEN25_INSTRUCT_CHAT_TEMPLATE;
}

/**
 * An s1K assistant turn: `<|im_start|>think\n{trajectory}\n<|im_start|>answer\nAnswer: {attempt}`, built as
 * s1's data/tokenization.py builds it — trajectory parts joined by '\n' and trimmed, the attempt trimmed, and
 * "Answer: " prepended only when the attempt does not already contain "Answer:".
 */
export function s1AssistantText(trajectory: string | readonly string[], attempt: string): string {
  const thinking = (typeof trajectory === 'string' ? trajectory : trajectory.join('\n')).trim();
  const answer = attempt.includes('Answer:') ? attempt : `Answer: ${attempt}`;
  return `<|im_start|>think\n${thinking}\n<|im_start|>answer\n${answer.trim()}`;
}
