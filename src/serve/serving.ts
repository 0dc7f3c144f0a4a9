// What every request of `rank1 serve` shares (vLLM's serving base): the scheduler, the tokenizer and chat
// template, the model's name and context, the token ids that end a turn, the metrics, and text decoding — the whole text
// of a completion, and each token's own text for structured outputs (cached: the same few thousand tokens
// are asked about on every step).
import { encodeChat } from '../model/chat-template.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import type { LoraAdapters } from '../model/lora.ts';
import { ServeMetrics } from './metrics.ts';
import type { DecodeScheduler } from './scheduler.ts';

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
  /** `--lora-modules`: adapters served by name beside the base (./lora-modules.ts). */
  loraModules?: ReadonlyMap<string, LoraAdapters>;
}

export interface Serving {
  scheduler: DecodeScheduler;
  tokenizer: Tokenizer;
  chatTemplate: string;
  modelId: string;
  contextLength: number;
  defaultMaxTokens: number;
  /** Characters in the vocabulary's longest token: no text holds more than this many per token (./screen.ts). */
  longestTokenChars: number;
  /** The fewest tokens the chat template spends on a message, empty (./screen.ts). */
  tokensPerMessage: number;
  /** Ids that end the answer (kept out of its text and its token count). */
  stopIds: readonly number[];
  /** The text of generated ids, end-of-turn ids and special tokens left out. */
  decodeText: (ids: readonly number[]) => string;
  /** One token's own text ('' for special tokens). */
  tokenText: (id: number) => string;
  metrics: ServeMetrics;
  /** `--lora-modules`: adapters served by name beside the base (./lora-modules.ts). */
  loraModules: ReadonlyMap<string, LoraAdapters>;
}

export function createServing(options: ServerOptions): Serving {
  const { scheduler, tokenizer, chatTemplate, modelId, contextLength } = options;
  const stopIds = tokenizer.stopIds();
  const tokenTexts = new Map<number, string>();
  return {
    scheduler, tokenizer, chatTemplate, modelId, contextLength, stopIds,
    loraModules: options.loraModules ?? new Map(),
    defaultMaxTokens: options.defaultMaxTokens ?? 512,
    longestTokenChars: longestTokenChars(tokenizer, scheduler.model.dims.vocab),
    tokensPerMessage: tokensPerMessage(tokenizer, chatTemplate),
    metrics: new ServeMetrics(modelId, scheduler),
    decodeText: (ids) => tokenizer.decode(ids.filter((id) => !stopIds.includes(id)), { skipSpecialTokens: true }),
    tokenText: (id) => {
      let text = tokenTexts.get(id);
      if (text === undefined) tokenTexts.set(id, (text = tokenizer.decode([id], { skipSpecialTokens: true })));
      return text;
    },
  };
}

/**
 * The most characters one token's text can hold: its vocabulary entry's length (byte-level BPE writes a byte
 * per character, SentencePiece's entries are their text), which no decoded piece exceeds.
 */
function longestTokenChars(tokenizer: Tokenizer, vocab: number): number {
  let longest = 1;
  for (let id = 0; id < vocab; id++) longest = Math.max(longest, tokenizer.idToToken(id)?.length ?? 0);
  return longest;
}

/**
 * The fewest tokens the chat template adds for one more message, over the roles it renders: a second empty
 * message's cost (with Qwen's template `<|im_start|>user\n<|im_end|>\n`, 5 tokens). 0 when no role renders twice.
 */
function tokensPerMessage(tokenizer: Tokenizer, chatTemplate: string): number {
  let fewest = Infinity;
  for (const role of ['system', 'user', 'assistant', 'tool']) {
    try {
      const one = encodeChat(tokenizer, chatTemplate, [{ role, content: '' }]).length;
      const two = encodeChat(tokenizer, chatTemplate, [{ role, content: '' }, { role, content: '' }]).length;
      fewest = Math.min(fewest, Math.max(0, two - one));
    } catch {
      // a template that refuses this shape says nothing about the others
    }
  }
  return Number.isFinite(fewest) ? fewest : 0;
}
