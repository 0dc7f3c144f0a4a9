// Cheap bounds on a chat request's size before its exact prompt is built (issue 20): tokenizing a 1 MB
// message in one go holds the event loop for seconds, and every live stream with it. First, with no
// tokenizing, more messages than the context holds at the template's cost of an empty message are refused,
// and so are messages holding more characters than the context could at the vocabulary's longest token
// (characters ≥ tokens × longest). Then long messages are counted in slices of at most
// SCREEN_SLICE_CHARS characters, the event loop free between slices, and refused once the count is past the
// context. Only what passes is rendered and tokenized exactly (./prepare.ts): work bounded by the context.
//
// Slices are cut before a space that follows a non-space ("… word| next"), where byte-level BPE's and
// SentencePiece's pre-tokenizers cut too, so the sliced count is the whole text's count; where a slice has no
// such place it is cut at its length, which can only shift a token or two. The refusal keeps a margin for that.
import { ApiError, parseChatCompletionRequest } from './protocol.ts';
import { contentText } from './prepare.ts';
import type { Serving } from './serving.ts';

/** Characters of message text tokenized in one go while counting (the event loop runs between slices). */
export const SCREEN_SLICE_CHARS = 8192;

function contextExceeded(message: string): ApiError {
  return new ApiError(400, message, 'invalid_request_error', 'messages', 'context_length_exceeded');
}

/** Throws context_length_exceeded for messages too long for the model; anything else is left to prepareRequest. */
export async function screenRequest(body: unknown, serving: Serving): Promise<void> {
  let texts: string[];
  try {
    const request = parseChatCompletionRequest(body);
    if (request.model !== serving.modelId) return;
    texts = request.messages.map((m) => contentText(m.content));
  } catch {
    return; // prepareRequest reports it
  }
  const { contextLength, longestTokenChars, tokensPerMessage, tokenizer } = serving;
  // Every message costs the template's turn markers at least: a floor under the prompt's length.
  const floor = texts.length * tokensPerMessage;
  if (floor >= contextLength) {
    throw contextExceeded(`${texts.length} messages take at least ${floor} tokens of the chat template's markers: this model's context is ${contextLength} tokens`);
  }
  const chars = texts.reduce((sum, text) => sum + text.length, 0);
  if (chars > contextLength * longestTokenChars) {
    throw contextExceeded(`the messages hold ${chars} characters, more than ${contextLength} tokens of at most ${longestTokenChars} characters each: this model's context is ${contextLength} tokens`);
  }
  if (chars <= SCREEN_SLICE_CHARS) return;
  const limit = Math.ceil(contextLength * 1.1) + 16;
  let tokens = floor;
  for (const text of texts) {
    for (const slice of slices(text, SCREEN_SLICE_CHARS)) {
      tokens += tokenizer.encode(slice, { addSpecialTokens: false }).length;
      if (tokens > limit) throw contextExceeded(`the messages are more than ${limit} tokens; this model's context is ${contextLength}`);
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
}

/** `text` in pieces of at most `size` characters, cut before a space that follows a non-space where there is one. */
export function* slices(text: string, size: number): Generator<string> {
  let start = 0;
  while (start < text.length) {
    let end = Math.min(text.length, start + size);
    if (end < text.length) {
      let cut = end;
      while (cut > start + 1 && !(text[cut] === ' ' && !/\s/.test(text[cut - 1]!))) cut--;
      if (cut > start + 1) end = cut;
      else if (/[\uD800-\uDBFF]/.test(text[end - 1]!)) end--; // never split a surrogate pair
    }
    yield text.slice(start, end);
    start = end;
  }
}
