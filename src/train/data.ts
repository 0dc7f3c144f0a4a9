// Training data: rows from JSONL or Parquet, rendered through the model's chat template, tokenized with a
// loss mask over the assistant turn, truncated to a block, put in a resumable per-epoch order
// (data-order.ts) and right-padded into micro-batches (data-batch.ts). The row types are in data-rows.ts.
//
// Loss-mask convention (used everywhere in src/train): the mask is aligned to INPUT positions.
// lossMask[t] = 1 means the token at position t is a scored *target*: the logits at position t−1 are trained
// to predict inputIds[t]. lossMask[0] is therefore never used. `makeBatch` does the shift once, giving
// targets[t] = ids[t+1] and mask[t] = lossMask[t+1], so the trainer takes cross-entropy of logits[t] against
// targets[t] weighted by mask[t] with no further bookkeeping.
//
// Row kinds, detected per file from its first row (Parquet: from its columns); every row must fit it:
//   s1k     {question, deepseek_thinking_trajectory, deepseek_attempt} — s1K-1.1. The trajectory may be a
//           string (s1K-1.1) or a list of strings (joined with '\n', as s1 does). Rendered through the chat
//           template as [user: question, assistant: s1AssistantText(trajectory, attempt)], with the
//           template's default system prompt (Qwen's "You are Qwen, created by Alibaba Cloud. ...").
//   text    {text} — already templated (e.g. s1K-1.1_tokenized's `text` column).
//   tokens  {input_ids, loss_mask} — pre-tokenized; equal lengths, non-negative ints, mask of 0/1.
// Extra fields are ignored. Errors name the file and the JSONL line (1-based) or Parquet row (0-based).
//
// Which tokens are scored in text rows: everything after the first `<|im_start|>assistant\n` — the assistant
// turn including its closing `<|im_end|>\n` — as s1 trains (TRL's DataCollatorForCompletionOnlyLM with that
// response template). Rows without the marker are an error by default; `ifNoAssistant: 'score-all'` scores
// every token instead (for plain-text corpora). Sequences longer than `blockSize` (s1.1: 20000) are cut at
// the end, as s1's max_seq_length does.
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } from 'hyparquet';
import type { AsyncBuffer, FileMetaData } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { QWEN25_INSTRUCT_CHAT_TEMPLATE, renderChat, s1AssistantText } from '../model/chat-template.ts';
import type { Tokenizer } from '../model/tokenizer.ts';

import type { RowKind, S1kRow, TextRow, TokenizedExample, TrainingRow } from './data-rows.ts';

/** s1.1's block size (max_seq_length): longer sequences are truncated to this many tokens. */
export const DEFAULT_BLOCK_SIZE = 20000;

/** Where the scored part of a templated conversation starts (ChatML, as Qwen's templates render it). */
export const ASSISTANT_MARKER = '<|im_start|>assistant\n';

/** A row that does not fit its file's kind, a file that cannot be read or parsed, or a row without a marker. */
export class TrainingDataError extends Error {
  override name = 'TrainingDataError';
}

const S1K_FIELDS = ['question', 'deepseek_thinking_trajectory', 'deepseek_attempt'] as const;
const KIND_FIELDS: Record<RowKind, readonly string[]> = {
  s1k: S1K_FIELDS,
  text: ['text'],
  tokens: ['input_ids', 'loss_mask'],
};
const KIND_NAMES: Record<RowKind, string> = { s1k: 'an s1K-1.1', text: 'a templated text', tokens: 'a pre-tokenized' };
const KNOWN_KINDS = 'an s1K-1.1 row {question, deepseek_thinking_trajectory, deepseek_attempt}, a templated {text} row, '
  + 'or a pre-tokenized {input_ids, loss_mask} row';

/** The kind whose fields a row (or a Parquet file's column list) names; pre-tokenized wins, then s1K, then text. */
function detectKind(fields: ReadonlySet<string>): RowKind | undefined {
  if (fields.has('input_ids') || fields.has('loss_mask')) return 'tokens';
  if (fields.has('deepseek_thinking_trajectory') || fields.has('deepseek_attempt')) return 's1k';
  if (fields.has('text')) return 'text';
  return undefined;
}

/**
 * All rows of a JSONL or Parquet file (Parquet is recognised by its `PAR1` magic, whatever the extension),
 * checked against the kind of the first row. Parquet is read one row group at a time, and only the columns
 * the kind needs, so s1K-1.1's other long columns (gemini_thinking_trajectory, ...) are never decoded.
 */
export async function loadTrainingRows(file: string): Promise<TrainingRow[]> {
  const rows: TrainingRow[] = [];
  for await (const row of iterateTrainingRows(file)) rows.push(row);
  return rows;
}

/**
 * The rows of a JSONL or Parquet file one at a time, with the same checks as `loadTrainingRows` (which
 * collects them): memory holds one line, or one Parquet row group, however large the file.
 * Throws TrainingDataError naming the file when it has no rows.
 */
export async function* iterateTrainingRows(file: string): AsyncGenerator<TrainingRow> {
  const magic = await fileMagic(file);
  let count = 0;
  for await (const row of magic === 'PAR1' ? parquetRows(file) : jsonlRows(file)) {
    count++;
    yield row;
  }
  if (count === 0) throw new TrainingDataError(`${file}: no rows`);
}

/** The first four bytes of a file as latin1 (`PAR1` for Parquet); a file that cannot be opened is named. */
export async function fileMagic(file: string): Promise<string> {
  const handle = await open(file, 'r').catch((error: Error) => {
    throw new TrainingDataError(`${file}: cannot open: ${error.message}`, { cause: error });
  });
  try {
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(4), 0, 4, 0);
    return buffer.subarray(0, bytesRead).toString('latin1');
  } finally {
    await handle.close();
  }
}

async function* jsonlRows(file: string): AsyncGenerator<TrainingRow> {
  const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
  let kind: RowKind | undefined;
  let firstLine = 0;
  let lineNumber = 0;
  for await (const rawLine of lines) {
    lineNumber++;
    const line = lineNumber === 1 ? rawLine.replace(/^\uFEFF/, '') : rawLine;
    if (line.trim() === '') continue;
    const source = `${file}:${lineNumber}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      throw new TrainingDataError(`${source}: not valid JSON: ${(error as Error).message}`, { cause: error });
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new TrainingDataError(`${source}: expected a JSON object per line, got ${describe(value)}`);
    }
    const record = value as Record<string, unknown>;
    if (kind === undefined) {
      kind = detectKind(new Set(Object.keys(record)));
      firstLine = lineNumber;
      if (kind === undefined) throw new TrainingDataError(`${source}: row fits no known kind: expected ${KNOWN_KINDS}; it has ${fieldList(Object.keys(record))}`);
    }
    yield rowOfKind(kind, record, source, `line ${firstLine}`);
  }
}

async function* parquetRows(file: string): AsyncGenerator<TrainingRow> {
  let buffer: AsyncBuffer;
  let metadata: FileMetaData;
  let columns: string[];
  try {
    buffer = await asyncBufferFromFile(file);
    metadata = await parquetMetadataAsync(buffer);
    columns = parquetSchema(metadata).children.map((child) => child.element.name);
  } catch (error) {
    throw new TrainingDataError(`${file}: not a readable Parquet file: ${(error as Error).message}`, { cause: error });
  }
  const kind = detectKind(new Set(columns));
  if (kind === undefined) throw new TrainingDataError(`${file}: Parquet columns fit no known row kind: expected ${KNOWN_KINDS}; it has ${fieldList(columns)}`);
  const missing = KIND_FIELDS[kind].filter((field) => !columns.includes(field));
  if (missing.length > 0) throw new TrainingDataError(`${file}: Parquet columns look like ${KIND_NAMES[kind]} file, but there is no column ${missing.map((f) => `'${f}'`).join(', ')}`);

  let groupStart = 0;
  for (const group of metadata.row_groups) {
    const groupEnd = groupStart + Number(group.num_rows);
    let records: Record<string, unknown>[];
    try {
      records = await parquetReadObjects({ file: buffer, metadata, columns: [...KIND_FIELDS[kind]], rowStart: groupStart, rowEnd: groupEnd, compressors });
    } catch (error) {
      throw new TrainingDataError(`${file}: cannot read Parquet rows ${groupStart}–${groupEnd - 1}: ${(error as Error).message}`, { cause: error });
    }
    for (let i = 0; i < records.length; i++) yield rowOfKind(kind, records[i]!, `${file}: row ${groupStart + i}`, 'its columns');
    groupStart = groupEnd;
  }
}

/** Checks a record against `kind` and converts it; errors name `source` and where the kind was detected. */
function rowOfKind(kind: RowKind, record: Record<string, unknown>, source: string, detectedFrom: string): TrainingRow {
  const fail = (problem: string): never => {
    throw new TrainingDataError(`${source}: expected ${KIND_NAMES[kind]} row (the kind detected from ${detectedFrom}), but ${problem}`);
  };
  for (const field of KIND_FIELDS[kind]) {
    if (!(field in record) || record[field] === undefined) fail(`field '${field}' is missing (it has ${fieldList(Object.keys(record))})`);
  }
  const string = (field: string): string => {
    const value = record[field];
    return typeof value === 'string' ? value : fail(`field '${field}' is ${describe(value)}, not a string`);
  };
  switch (kind) {
    case 's1k': {
      const raw = record['deepseek_thinking_trajectory'];
      let trajectory: string | string[];
      if (typeof raw === 'string') {
        trajectory = raw;
      } else if (Array.isArray(raw)) {
        const bad = raw.findIndex((part) => typeof part !== 'string');
        if (bad >= 0) fail(`'deepseek_thinking_trajectory'[${bad}] is ${describe(raw[bad])}, not a string (the trajectory must be a string or a list of strings)`);
        trajectory = raw as string[];
      } else {
        trajectory = fail(`field 'deepseek_thinking_trajectory' is ${describe(raw)}, not a string or a list of strings`);
      }
      return { kind, source, question: string('question'), trajectory, attempt: string('deepseek_attempt') };
    }
    case 'text':
      return { kind, source, text: string('text') };
    case 'tokens': {
      const ids = intList(record['input_ids'], 'input_ids', 0, 0x7fffffff, fail);
      const mask = intList(record['loss_mask'], 'loss_mask', 0, 1, fail);
      if (ids.length === 0) fail(`'input_ids' is empty`);
      if (mask.length !== ids.length) fail(`'loss_mask' has ${mask.length} entries and 'input_ids' ${ids.length}`);
      return { kind, source, inputIds: Int32Array.from(ids), lossMask: Uint8Array.from(mask) };
    }
  }
}

function isListLike(value: unknown): boolean {
  return Array.isArray(value) || (ArrayBuffer.isView(value) && !(value instanceof DataView));
}

/** A list of integers in [min, max]: numbers, bigints (Parquet INT64) or booleans (masks), as plain numbers. */
function intList(value: unknown, field: string, min: number, max: number, fail: (problem: string) => never): number[] {
  if (!isListLike(value)) return fail(`field '${field}' is ${describe(value)}, not a list of integers`);
  const items = Array.from(value as ArrayLike<unknown>);
  const out = new Array<number>(items.length);
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    const n = typeof item === 'bigint' ? Number(item) : typeof item === 'boolean' && max === 1 ? Number(item) : item;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
      return fail(`'${field}'[${i}] is ${describe(item)}, not an integer in [${min}, ${max}]`);
    }
    out[i] = n;
  }
  return out;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return `${typeof value} ${String(value)}`;
  return typeof value === 'object' ? 'an object' : typeof value;
}

function fieldList(fields: readonly string[]): string {
  return fields.length === 0 ? 'no fields' : `fields ${fields.map((f) => `'${f}'`).join(', ')}`;
}

/**
 * The training text of an s1K or text row: the conversation rendered through `template`, without a generation
 * prompt (the assistant turn is there, closed by `<|im_end|>\n`), as s1's data/tokenization.py builds `text`.
 */
export function renderRow(row: S1kRow | TextRow, template: string = QWEN25_INSTRUCT_CHAT_TEMPLATE): string {
  if (row.kind === 'text') return row.text;
  return renderChat(template, [
    { role: 'user', content: row.question },
    { role: 'assistant', content: s1AssistantText(row.trajectory, row.attempt) },
  ]);
}

export interface TokenizeOptions {
  /** Text that opens the scored span (default `<|im_start|>assistant\n`); its first occurrence counts. */
  assistantMarker?: string;
  /** A text row without the marker: 'error' (default) throws naming the row; 'score-all' scores every token. */
  ifNoAssistant?: 'error' | 'score-all';
}

/**
 * Token ids and the input-aligned loss mask of one row, cut to `blockSize` tokens. Text is encoded without
 * added special tokens (the template already wrote them, as apply_chat_template(tokenize=True) does).
 *
 * The scored span is found in token space: the whole text is encoded once, and the text up to and including
 * the marker is encoded on its own; the first position where the two id lists differ (normally the end of
 * the prefix's ids) is the first scored token. So the boundary always agrees with the whole-text encoding:
 * should BPE merge the marker's final '\n' with the reply's first characters (a reply opening with
 * whitespace), that merged token is scored, since it is the first to hold reply text.
 * A `tokensRow` needs no tokenizer (pass null); its ids and mask are only truncated.
 */
export function tokenizeRow(
  row: TrainingRow,
  tokenizer: Tokenizer | null,
  template: string = QWEN25_INSTRUCT_CHAT_TEMPLATE,
  blockSize: number = DEFAULT_BLOCK_SIZE,
  options: TokenizeOptions = {},
): TokenizedExample {
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new RangeError(`tokenizeRow: blockSize must be a positive integer, got ${blockSize}`);
  if (row.kind === 'tokens') {
    return { inputIds: row.inputIds.slice(0, blockSize), lossMask: row.lossMask.slice(0, blockSize) };
  }
  if (tokenizer === null) throw new TrainingDataError(`${row.source}: ${KIND_NAMES[row.kind]} row needs a tokenizer`);
  const { assistantMarker = ASSISTANT_MARKER, ifNoAssistant = 'error' } = options;
  const text = renderRow(row, template);
  const ids = tokenizer.encode(text, { addSpecialTokens: false });
  const markerAt = text.indexOf(assistantMarker);
  let scoredFrom: number;
  if (markerAt < 0) {
    if (ifNoAssistant !== 'score-all') {
      throw new TrainingDataError(`${row.source}: no ${JSON.stringify(assistantMarker)} in the ${row.kind === 's1k' ? 'rendered ' : ''}text, so no assistant span to score (ifNoAssistant: 'score-all' scores every token)`);
    }
    scoredFrom = 0;
  } else {
    const prefixIds = tokenizer.encode(text.slice(0, markerAt + assistantMarker.length), { addSpecialTokens: false });
    scoredFrom = 0;
    while (scoredFrom < prefixIds.length && scoredFrom < ids.length && prefixIds[scoredFrom] === ids[scoredFrom]) scoredFrom++;
  }
  const length = Math.min(ids.length, blockSize);
  const inputIds = Int32Array.from(ids.slice(0, length));
  const lossMask = new Uint8Array(length);
  lossMask.fill(1, Math.min(scoredFrom, length));
  return { inputIds, lossMask };
}

/** `tokenizeRow` over every row. */
export function tokenizeRows(
  rows: readonly TrainingRow[],
  tokenizer: Tokenizer | null,
  template: string = QWEN25_INSTRUCT_CHAT_TEMPLATE,
  blockSize: number = DEFAULT_BLOCK_SIZE,
  options: TokenizeOptions = {},
): TokenizedExample[] {
  return rows.map((row) => tokenizeRow(row, tokenizer, template, blockSize, options));
}

/** Number of scored targets in an example (positions ≥ 1 with mask 1: position 0 has no logits before it). */
export function scoredTokenCount(example: TokenizedExample): number {
  let count = 0;
  for (let t = 1; t < example.lossMask.length; t++) count += example.lossMask[t]!;
  return count;
}
