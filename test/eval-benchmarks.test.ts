// Benchmark loaders and prompts: MATH-500 / AIME JSONL, GPQA-Diamond CSV (rows written for these tests).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BenchmarkDataError, loadBenchmark, parseGpqaCsv, parseMathJsonl, shuffleGpqaChoices } from '../src/eval/benchmarks.ts';
import { QWEN25_INSTRUCT_CHAT_TEMPLATE } from '../src/model/chat-template.ts';
import { buildEvalPrompt, userMessage } from '../src/eval/prompt.ts';
import { gradeOutput } from '../src/eval/grade.ts';

const fixtures = path.resolve(import.meta.dirname, 'fixtures/eval');
let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'rank1-eval-bench-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function failure(bench: 'math500' | 'aime24' | 'gpqa', name: string, text: string): Promise<string> {
  const file = path.join(tmp, name);
  await writeFile(file, text);
  const error = await loadBenchmark(bench, file).then(() => null, (e: unknown) => e);
  expect(error).toBeInstanceOf(BenchmarkDataError);
  return (error as Error).message;
}

describe('MATH-500 and AIME JSONL', () => {
  it('reads problems, answers and ids, skipping blank lines', async () => {
    const problems = await loadBenchmark('math500', path.join(fixtures, 'math-sample.jsonl'));
    expect(problems.map((p) => [p.index, p.id, p.gold])).toEqual([
      [0, 'sample/one-plus-one.json', '2'],
      [1, 'sample/half.json', '\\frac{1}{2}'],
      [2, 'sample/interval.json', '(-2,2)'],
    ]);
    expect(problems[1]!.problem).toBe('Simplify $\\frac{2}{4}$.');
  });

  it('reads AIME answers given as numbers or strings, with id or ID', async () => {
    const problems = await loadBenchmark('aime24', path.join(fixtures, 'aime-sample.jsonl'));
    expect(problems.map((p) => [p.id, p.gold])).toEqual([['1', '24'], ['2024-II-1', '006'], ['2', '111']]);
    expect(gradeOutput('aime24', 'Answer: \\boxed{6}', problems[1]!).correct).toBe(true);
    expect(gradeOutput('aime24', 'Answer: \\boxed{024}', problems[0]!).correct).toBe(true);
  });

  it('names the file and line of a malformed row', async () => {
    expect(await failure('math500', 'bad-json.jsonl', '{"problem": "a", "answer": "1"}\n{"problem": \n')).toMatch(/bad-json\.jsonl:2: not valid JSON/);
    expect(await failure('math500', 'no-answer.jsonl', '{"problem": "a", "answer": "1"}\n\n{"problem": "b"}\n')).toMatch(/no-answer\.jsonl:3: missing "answer"/);
    expect(await failure('aime24', 'no-problem.jsonl', '{"answer": 3}\n')).toMatch(/no-problem\.jsonl:1: missing "problem"/);
    expect(await failure('aime24', 'float.jsonl', '{"problem": "p", "answer": 1.5}\n')).toMatch(/float\.jsonl:1: "answer" must be an integer or a string/);
    expect(await failure('math500', 'array.jsonl', '[1, 2]\n')).toMatch(/array\.jsonl:1: expected a JSON object/);
    expect(await failure('math500', 'empty.jsonl', '\n\n')).toMatch(/empty\.jsonl: no math500 problems/);
    await expect(loadBenchmark('math500', path.join(tmp, 'absent.jsonl'))).rejects.toThrow(/absent\.jsonl: cannot read the math500 data file/);
  });

  it('parses without a file system too', () => {
    expect(parseMathJsonl('{"question": "q?", "answer": "7"}', 'inline', 'math500')[0]).toMatchObject({ problem: 'q?', gold: '7', id: '0' });
  });
});

describe('GPQA-Diamond CSV', () => {
  it('reads the GPQA columns among others, trims fields and keeps multi-line questions', async () => {
    const problems = await loadBenchmark('gpqa', path.join(fixtures, 'gpqa-sample.csv'));
    expect(problems).toHaveLength(4);
    expect(problems.map((p) => p.id)).toEqual(['rec-sodium', 'rec-mercury', 'rec-carbon', '3']);
    expect(problems[1]!.problem).toBe('Which planet is closest to the Sun?\n(Consider the eight planets only.)');
    expect(problems[2]!.problem).toContain('given "carbon" means Z = 6');
    expect(problems[2]!.choices).toContain('4, or 2 depending on isotope');
    expect(problems[3]!.problem).toBe('What is the SI unit of force?');
    expect(problems[3]!.choices).toContain('Newton');
  });

  it('labels the correct answer with the gold letter, in a fixed per-row order', async () => {
    const file = path.join(fixtures, 'gpqa-sample.csv');
    const first = await loadBenchmark('gpqa', file);
    const again = await loadBenchmark('gpqa', file);
    expect(again).toEqual(first);
    const correct = ['Na', 'Mercury', '6', 'Newton'];
    for (const [k, p] of first.entries()) {
      expect(p.choices).toHaveLength(4);
      expect(p.choices!['ABCD'.indexOf(p.gold)]).toBe(correct[k]);
      expect(gradeOutput('gpqa', `<|im_start|>answer\nAnswer: ${p.gold}`, p)).toEqual({ extracted: p.gold, correct: true });
      const wrong = 'ABCD'.split('').find((l) => l !== p.gold)!;
      expect(gradeOutput('gpqa', `Answer: ${wrong}`, p).correct).toBe(false);
    }
  });

  it('shuffles each question by its own row index, hitting every position', () => {
    fc.assert(fc.property(fc.nat(100_000), (index) => {
      const { choices, gold } = shuffleGpqaChoices('right', ['w1', 'w2', 'w3'], index);
      expect([...choices].sort()).toEqual(['right', 'w1', 'w2', 'w3']);
      expect(choices['ABCD'.indexOf(gold)]).toBe('right');
      expect(shuffleGpqaChoices('right', ['w1', 'w2', 'w3'], index)).toEqual({ choices, gold });
    }));
    const golds = new Set(Array.from({ length: 40 }, (_, k) => shuffleGpqaChoices('r', ['a', 'b', 'c'], k).gold));
    expect(golds).toEqual(new Set(['A', 'B', 'C', 'D']));
  });

  it('names the file and line of missing columns and malformed rows', async () => {
    expect(await failure('gpqa', 'cols.csv', 'Question,Correct Answer,Incorrect Answer 1\nq,a,b\n')).toMatch(/cols\.csv:1: missing column\(s\) "Incorrect Answer 2", "Incorrect Answer 3"/);
    const header = 'Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3\n';
    expect(await failure('gpqa', 'short.csv', `${header}q,a,b,c,d\n"multi\nline",a,b,c,d\nq,a,b\n`)).toMatch(/short\.csv:5: 3 field\(s\), but the header has 5/);
    expect(await failure('gpqa', 'blank.csv', `${header}q,a,b,,d\n`)).toMatch(/blank\.csv:2: empty "Incorrect Answer 2"/);
    expect(await failure('gpqa', 'quote.csv', `${header}"q,a,b,c,d\n`)).toMatch(/quote\.csv:2: not valid CSV: Quote Not Closed/);
    expect(await failure('gpqa', 'header-only.csv', header)).toMatch(/header-only\.csv: no GPQA questions/);
    expect(await failure('gpqa', 'nothing.csv', '')).toMatch(/nothing\.csv: empty CSV/);
  });

  it('reads a byte-order mark and CRLF line ends', () => {
    const text = '\uFEFFQuestion,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3\r\nq?,yes,no,maybe,never\r\n';
    expect(parseGpqaCsv(text, 'inline.csv')[0]).toMatchObject({ problem: 'q?', id: '0' });
  });
});

describe('prompts', () => {
  it('renders the problem as the user message, then opens the thinking phase', () => {
    const prompt = buildEvalPrompt(QWEN25_INSTRUCT_CHAT_TEMPLATE, { index: 0, id: '0', problem: 'What is $1+1$?', gold: '2' });
    expect(prompt).toBe('<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n'
      + '<|im_start|>user\nWhat is $1+1$?<|im_end|>\n<|im_start|>assistant\n<|im_start|>think');
  });

  it('lists the GPQA choices labelled A–D after the question (s1\'s template)', () => {
    const message = userMessage({ index: 0, id: '0', problem: 'Pick one.', gold: 'B', choices: ['w', 'x', 'y', 'z'] });
    expect(message).toBe('Pick one.\n\nA) w\nB) x\nC) y\nD) z');
  });
});
