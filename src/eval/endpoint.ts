// Generation for `rank1 eval --endpoint URL --model NAME`: each problem's s1 prompt (rendered here, with the
// model's chat template ending in `<|im_start|>think`) sent to any OpenAI-compatible completions endpoint —
// vLLM, SGLang, TGI, `rank1 serve` — so the prompt is exactly s1's and no server chat template intervenes.
// Greedy (temperature 0), with the retries and bounded concurrency of the client `rank1 interpret` uses.
//
// What comes back is made into the row the in-process run writes: the text is asked for with special tokens
// kept (`skip_special_tokens: false`: s1's `<|im_start|>answer` is a special token) and the stop token the
// server leaves out of the text is put back (vLLM's `stop_reason` names it; null means the tokenizer's
// end-of-sequence token), so `output` equals `tokenizer.decode(ids)` of the in-process run; the token count is
// `usage.completion_tokens` (vLLM counts the stop token too, as the in-process count does).
import type { TextCompletionAnswer, CachedChatClient } from '../interp/llm-client.ts';
import type { StopReason } from '../model/generate.ts';
import type { EvalTokenizer } from './run.ts';

/** What one endpoint completion gives the results row. */
export interface EndpointCompletion {
  /** The generated text as the in-process decode writes it (special tokens and a final stop token included). */
  text: string;
  tokens: number;
  stopReason: StopReason;
  /** HTTP attempts spent (retries included). */
  requests: number;
}

export interface EndpointCompleterOptions {
  client: Pick<CachedChatClient, 'textCompletion'>;
  tokenizer: EvalTokenizer & { eosTokenIds?: readonly number[] };
  /** Positions the served model supports, when known (the model folder's config.json): max_tokens is capped to fit. */
  contextLength?: number;
}

/**
 * The prompt as sent: its text when the text tokenizes back to the same ids (the rule), else the ids
 * themselves — a problem holding special-token text (`<|im_end|>`) would otherwise become control tokens,
 * since completions endpoints tokenize prompt text with special tokens parsed.
 */
export function promptPayload(tokenizer: EvalTokenizer, promptIds: readonly number[]): string | number[] {
  const text = tokenizer.decode(promptIds);
  const again = tokenizer.encode(text, { addSpecialTokens: false });
  return again.length === promptIds.length && again.every((id, k) => id === promptIds[k]) ? text : [...promptIds];
}

export function endpointCompleter({ client, tokenizer, contextLength }: EndpointCompleterOptions) {
  return async (promptIds: readonly number[], { maxTokens, stopIds }: { maxTokens: number; stopIds: readonly number[] }): Promise<EndpointCompletion> => {
    const room = contextLength === undefined ? maxTokens : Math.max(1, Math.min(maxTokens, contextLength - promptIds.length));
    const answer = await client.textCompletion({
      prompt: promptPayload(tokenizer, promptIds),
      max_tokens: room,
      temperature: 0,
      // vLLM's sampling extensions (rank1 serve honours them too): the same stop ids as in process, and
      // special tokens kept in the text.
      stop_token_ids: [...stopIds],
      skip_special_tokens: false,
      spaces_between_special_tokens: false,
    });
    return asCompletion(answer, tokenizer);
  };
}

/** The endpoint's answer as the in-process run would have written it. */
export function asCompletion(answer: TextCompletionAnswer, tokenizer: EndpointCompleterOptions['tokenizer']): EndpointCompletion {
  const stopped = answer.finishReason === 'stop';
  let text = answer.text;
  if (stopped && typeof answer.stopReason !== 'string') {
    const stopId = answer.stopReason ?? tokenizer.eosTokenIds?.[0] ?? tokenizer.stopIds()[0];
    if (stopId !== undefined) text += tokenizer.decode([stopId]);
  }
  return { text, tokens: answer.usage.completion_tokens, stopReason: stopped ? (typeof answer.stopReason === 'string' ? 'stop_string' : 'stop_id') : 'max_tokens', requests: answer.requests };
}
