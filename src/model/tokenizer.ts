// The text side of a Hugging Face model folder: `tokenizer.json` (+ `tokenizer_config.json`) through
// @huggingface/tokenizers, the official pure-JS port of HF tokenizers, so ids match Python's exactly.
// Everything Qwen-specific is data in those files; nothing here hard-codes a vocabulary.
//
// Absent tokenizer: `loadTokenizer(dir)` resolves to null when the folder has no `tokenizer.json`, so a
// folder holding only weights stays usable with raw ids. A file that exists but cannot be read, parsed or
// built — or an explicitly named file that does not exist — throws `TokenizerLoadError`, naming the file.
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

export const TOKENIZER_FILE = 'tokenizer.json';

/** A tokenizer file that is missing (when named explicitly), unreadable, not JSON, or not a tokenizer. */
export class TokenizerLoadError extends Error {
  override name = 'TokenizerLoadError';
  constructor(readonly file: string, reason: string, options?: { cause?: unknown }) {
    super(`${file}: ${reason}`, options);
  }
}

export interface EncodeOptions {
  /** Run the post-processor (HF default true). Qwen's adds nothing; other tokenizers may add BOS/EOS. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens such as `<|im_end|>` from the text (HF default false). */
  skipSpecialTokens?: boolean;
}

/** Ids of the ChatML markers Qwen uses; undefined where the vocabulary lacks one. */
export interface ChatSpecialTokens {
  imStart: number | undefined; // <|im_start|>
  imEnd: number | undefined; // <|im_end|>
  endOfText: number | undefined; // <|endoftext|>
}

/** Feeds generated ids one at a time and gives back only text that is complete. */
export interface DecodeStream {
  /** Text that this id completes; '' while a multi-byte character is still partial. */
  push(id: number): string;
  /** Whatever is held back (a partial character decodes as U+FFFD), then starts afresh. */
  flush(): string;
}

type Json = Record<string, unknown>;

export class Tokenizer {
  /** Every special added token (`special: true` in tokenizer.json), content → id. */
  readonly specialTokens: ReadonlyMap<string, number>;
  readonly chatTokens: ChatSpecialTokens;
  /** Ids that end generation: generation_config.json, then tokenizer_config.json, then config.json, deduplicated. */
  readonly eosTokenIds: readonly number[];
  readonly bosTokenId: number | undefined;
  readonly padTokenId: number | undefined;
  /** One past the largest id the tokenizer knows (added tokens included); the model's embedding may be larger. */
  readonly vocabSize: number;
  private readonly inner: HfTokenizer;
  private readonly specialIds: ReadonlySet<number>;
  /** The same tokenizer without its special added tokens (built on first use): see encodeAsText. */
  private textOnly: HfTokenizer | undefined;
  private readonly files: { tokenizerJson: Json; tokenizerConfig: Json };

  /** Builds from already parsed files; `loadTokenizer` is the usual way in. */
  constructor(tokenizerJson: Json, tokenizerConfig: Json = {}, modelConfigs: { generationConfig?: Json; config?: Json } = {}) {
    this.inner = new HfTokenizer(tokenizerJson, tokenizerConfig);
    this.files = { tokenizerJson, tokenizerConfig };
    const vocab = this.inner.get_vocab(true);
    let maxId = -1;
    for (const id of vocab.values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;

    const special = new Map<string, number>();
    const addedTokens = Array.isArray(tokenizerJson['added_tokens']) ? tokenizerJson['added_tokens'] as Json[] : [];
    for (const token of addedTokens) {
      if (token['special'] === true && typeof token['content'] === 'string' && typeof token['id'] === 'number') special.set(token['content'], token['id']);
    }
    this.specialTokens = special;
    this.specialIds = new Set(special.values());
    this.chatTokens = { imStart: this.tokenToId('<|im_start|>'), imEnd: this.tokenToId('<|im_end|>'), endOfText: this.tokenToId('<|endoftext|>') };

    const { generationConfig = {}, config = {} } = modelConfigs;
    this.eosTokenIds = [...new Set([
      ...idList(generationConfig['eos_token_id']),
      ...this.idsOfTokens(tokenizerConfig['eos_token']),
      ...idList(config['eos_token_id']),
    ])];
    this.bosTokenId = idList(generationConfig['bos_token_id'])[0] ?? this.idsOfTokens(tokenizerConfig['bos_token'])[0] ?? idList(config['bos_token_id'])[0];
    this.padTokenId = idList(generationConfig['pad_token_id'])[0] ?? this.idsOfTokens(tokenizerConfig['pad_token'])[0] ?? idList(config['pad_token_id'])[0];
  }

  encode(text: string, { addSpecialTokens = true }: EncodeOptions = {}): number[] {
    return this.inner.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /**
   * Ids of `text` read as plain text: special tokens written in it (`<|im_end|>`) are encoded as their
   * characters, never as control tokens (HF's `split_special_tokens=True`). For message content, which a
   * user writes: only a chat template may add control tokens (see encodeChat in ./chat-template.ts).
   */
  encodeAsText(text: string): number[] {
    if (this.textOnly === undefined) {
      const { tokenizerJson, tokenizerConfig } = this.files;
      const added = Array.isArray(tokenizerJson['added_tokens']) ? tokenizerJson['added_tokens'] as Json[] : [];
      this.textOnly = new HfTokenizer({ ...tokenizerJson, added_tokens: added.filter((token) => token['special'] !== true) }, tokenizerConfig);
    }
    return this.textOnly.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: ArrayLike<number>, { skipSpecialTokens = false }: DecodeOptions = {}): string {
    if (ids.length === 0) return ''; // the library rejects an empty list
    return this.inner.decode(Array.from(ids), { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: false });
  }

  /** The id of a vocabulary entry as stored (byte-level form, e.g. 'Ġworld'), or of an added token. */
  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.inner.id_to_token(id);
  }

  isSpecialId(id: number): boolean {
    return this.specialIds.has(id);
  }

  isEosId(id: number): boolean {
    return this.eosTokenIds.includes(id);
  }

  /**
   * The ids generation ends at, for every caller (eval, serve, the CLI, the playground): the eos ids, and
   * `<|im_end|>` and `<|endoftext|>` where the vocabulary has them (a chat turn ends at <|im_end|> even when a
   * base model's eos is only <|endoftext|>).
   */
  stopIds(): number[] {
    const { imEnd, endOfText } = this.chatTokens;
    return [...new Set([...this.eosTokenIds, ...[imEnd, endOfText].filter((id): id is number => id !== undefined)])];
  }

  /**
   * Streaming detokenizer for generation. Decoding token by token breaks multi-byte characters (an emoji
   * is often 2–4 byte-level tokens), so each push decodes a small window — the previously emitted tokens,
   * kept as context for decoders that treat a sequence start specially, plus the new ones — and emits the
   * new text only once it no longer ends in U+FFFD. The concatenation of every push and the final flush
   * equals `decode(allIds)`. A genuine U+FFFD at the end of the text is held until the next push or flush.
   */
  createDecodeStream(options: DecodeOptions = {}): DecodeStream {
    let window: number[] = []; // ids from the start of the last emitted chunk
    let emittedCount = 0; // window[0:emittedCount] is that chunk, already emitted
    let emittedText = '';
    const take = (final: boolean): string => {
      const text = this.decode(window, options);
      if (!final && (text.length <= emittedText.length || text.endsWith('\uFFFD'))) return '';
      const fresh = text.slice(emittedText.length);
      window = final ? [] : window.slice(emittedCount);
      emittedCount = window.length;
      emittedText = final ? '' : this.decode(window, options);
      return fresh;
    };
    return {
      push: (id) => {
        window.push(id);
        return take(false);
      },
      flush: () => take(true),
    };
  }

  /** Ids of a tokenizer_config token entry: a string, an AddedToken-like `{content}`, or a list of either. */
  private idsOfTokens(entry: unknown): number[] {
    const entries = Array.isArray(entry) ? entry : [entry];
    const ids: number[] = [];
    for (const item of entries) {
      const content = typeof item === 'string' ? item : isJson(item) && typeof item['content'] === 'string' ? item['content'] : undefined;
      const id = content === undefined ? undefined : this.tokenToId(content);
      if (id !== undefined) ids.push(id);
    }
    return ids;
  }
}

/**
 * Loads `tokenizer.json` from a model folder (or a path to the file itself), with `tokenizer_config.json`,
 * `generation_config.json` and `config.json` from the same folder when present. Resolves to null when a
 * folder has no tokenizer.json; throws TokenizerLoadError naming the file for anything else that goes wrong.
 */
export async function loadTokenizer(dirOrFile: string): Promise<Tokenizer | null> {
  const info = await stat(dirOrFile).catch(() => null);
  let file: string;
  if (info?.isDirectory()) {
    file = join(dirOrFile, TOKENIZER_FILE);
    if (!(await stat(file).catch(() => null))?.isFile()) return null;
  } else if (info?.isFile()) {
    file = dirOrFile;
  } else {
    throw new TokenizerLoadError(dirOrFile, 'no such file or folder');
  }
  const dir = dirname(file);
  const tokenizerJson = await readJson(file);
  if (tokenizerJson === undefined) throw new TokenizerLoadError(file, 'no such file');
  if (!isJson(tokenizerJson['model'])) throw new TokenizerLoadError(file, `not a tokenizer: no "model" object (is ${basename(file)} a Hugging Face tokenizer.json?)`);
  const tokenizerConfig = await readJson(join(dir, 'tokenizer_config.json'));
  const generationConfig = await readJson(join(dir, 'generation_config.json'));
  const config = await readJson(join(dir, 'config.json'));
  try {
    return new Tokenizer(tokenizerJson, tokenizerConfig ?? {}, { generationConfig, config });
  } catch (error) {
    throw new TokenizerLoadError(file, `could not build a tokenizer from it: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}

/** Parsed JSON object, or undefined when the file does not exist; anything malformed throws naming the file. */
async function readJson(file: string): Promise<Json | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TokenizerLoadError(file, `could not be read: ${(error as Error).message}`, { cause: error });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new TokenizerLoadError(file, `is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  if (!isJson(value)) throw new TokenizerLoadError(file, 'expected a JSON object at the top level');
  return value;
}

function isJson(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `eos_token_id` as configs write it: a number, a list of numbers, or null. */
function idList(value: unknown): number[] {
  const values = Array.isArray(value) ? value : [value];
  return values.filter((v): v is number => typeof v === 'number' && Number.isInteger(v));
}
