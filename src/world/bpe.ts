// A byte-level BPE tokenizer trained on the toy world's own text, written as a Hugging Face `tokenizer.json`
// of the same kind as Qwen2's (Split regex + ByteLevel pre-tokenizer, BPE model, ByteLevel decoder, ChatML
// special tokens as added tokens), so the real tokenizer and chat-template code paths run on it.
//
// Two deliberate differences from Qwen's regex: a digit keeps the space before it (` ?\p{N}`, as GPT-2 does,
// still one digit per piece), which makes "2 * 3 = 6" five tokens instead of nine; and an operator glued to
// a digit ("+5", "*3", the world's operations) is one piece. All 256 byte symbols are in the vocabulary, so
// any text encodes.

/** The pre-tokenizer's split pattern (Oniguruma syntax, as tokenizers' `Regex`; the JS twin below). */
export const WORLD_SPLIT_PATTERN = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}| ?[+*]\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
const SPLIT_REGEX = new RegExp(WORLD_SPLIT_PATTERN, 'gu');

/** Qwen's special tokens, in Qwen's order (ids follow the learned vocabulary). */
export const WORLD_SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

/** GPT-2's byte ↔ printable-character map (bytes_to_unicode): printable bytes map to themselves. */
function byteToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const table = new Array<string>(256);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + next++);
  }
  return table;
}
const BYTE_SYMBOLS = byteToUnicode();
const encoder = new TextEncoder();

/** A pre-token as its byte symbols (what BPE merges). */
function byteSymbols(piece: string): string[] {
  return Array.from(encoder.encode(piece), (b) => BYTE_SYMBOLS[b]!);
}

/** Splits text around special tokens and pre-tokenizes the rest, as the tokenizer will. */
export function preTokenize(text: string): string[] {
  const pieces: string[] = [];
  const specials = new RegExp(WORLD_SPECIAL_TOKENS.map((t) => t.replace(/[|]/g, '\\|')).join('|'), 'g');
  for (const chunk of text.split(specials)) {
    for (const match of chunk.matchAll(SPLIT_REGEX)) pieces.push(match[0]);
  }
  return pieces;
}

export interface BpeTrainingResult {
  vocab: Map<string, number>;
  merges: [string, string][];
}

/**
 * Learns up to `mergeCount` merges from `texts` (most frequent adjacent pair first; ties broken by the pair's
 * text, so the result is deterministic), stopping early when no pair occurs twice.
 */
export function trainBpe(texts: Iterable<string>, mergeCount: number): BpeTrainingResult {
  const wordCounts = new Map<string, number>();
  for (const text of texts) {
    for (const piece of preTokenize(text)) wordCounts.set(piece, (wordCounts.get(piece) ?? 0) + 1);
  }
  const words = [...wordCounts.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([w, count]) => ({ symbols: byteSymbols(w), count }));
  const vocab = new Map<string, number>();
  for (const symbol of BYTE_SYMBOLS) vocab.set(symbol, vocab.size);
  const merges: [string, string][] = [];
  for (let m = 0; m < mergeCount; m++) {
    const pairCounts = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairCounts.set(key, (pairCounts.get(key) ?? 0) + count);
      }
    }
    let best = '';
    let bestCount = 1;
    for (const [key, count] of pairCounts) {
      if (count > bestCount || (count === bestCount && count > 1 && key < best)) {
        best = key;
        bestCount = count;
      }
    }
    if (best === '') break;
    const [left, right] = best.split(' ') as [string, string];
    const merged = left + right;
    merges.push([left, right]);
    vocab.set(merged, vocab.size);
    for (const word of words) {
      const s = word.symbols;
      for (let i = 0; i + 1 < s.length; i++) {
        if (s[i] === left && s[i + 1] === right) s.splice(i, 2, merged);
      }
    }
  }
  return { vocab, merges };
}

/** The `tokenizer.json` object: the trained BPE plus the special tokens as added tokens after it. */
export function tokenizerJson({ vocab, merges }: BpeTrainingResult): Record<string, unknown> {
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
  const addedTokens = WORLD_SPECIAL_TOKENS.map((content, i) => ({
    id: vocab.size + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: { type: 'NFC' },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: WORLD_SPLIT_PATTERN }, behavior: 'Isolated', invert: false },
        byteLevel,
      ],
    },
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
      fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

/** tokenizer_config.json as Qwen2.5-Instruct writes it (the fields rank1 and transformers read). */
export function tokenizerConfigJson(vocabSize: number): Record<string, unknown> {
  return {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: Object.fromEntries(WORLD_SPECIAL_TOKENS.map((content, i) => [String(vocabSize + i), {
      content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true,
    }])),
    additional_special_tokens: ['<|im_start|>', '<|im_end|>'],
    bos_token: null,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    errors: 'replace',
    model_max_length: 1024,
    pad_token: '<|endoftext|>',
    split_special_tokens: false,
    tokenizer_class: 'Qwen2Tokenizer',
    unk_token: null,
  };
}
