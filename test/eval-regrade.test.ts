// `rank1 grade`: re-grading results files, its errors for bad input, and the bounded comparison it runs on.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gradeCommand } from '../src/cli/grade-command.ts';
import { EquivalenceChecker } from '../src/eval/grade/bounded-equivalence.ts';
import { parseRegradeRows, readRegradeRows, regradeRows } from '../src/eval/regrade.ts';

const row = (fields: Record<string, unknown>) => JSON.stringify({
  bench: 'math500', index: 0, id: 'p0', problem: 'p', gold: '\\frac{14}{3}', extracted: null, correct: false,
  tokensGenerated: 9, stopReason: 'stop_id', seconds: 1, output: 'So $\\boxed{\\dfrac{14}{3}}$.', ...fields,
});
const fileOf = (...rows: string[]) => `${rows.join('\n')}\n`;

let checker: EquivalenceChecker;
let tmp: string;
beforeAll(async () => {
  checker = new EquivalenceChecker(1000);
  tmp = await mkdtemp(path.join(tmpdir(), 'rank1-grade-'));
});
afterAll(async () => {
  await checker.close();
  await rm(tmp, { recursive: true, force: true });
});

describe('bad input names the file, line and field', () => {
  it.each<[string, string, 'math500' | 'aime24' | 'gpqa', RegExp]>([
    ['missing output', fileOf(row({}), row({ output: undefined })), 'math500', /r\.jsonl:2: "output" is missing/],
    ['missing gold', fileOf(row({ gold: undefined })), 'math500', /r\.jsonl:1: "gold" is missing/],
    ['output not text', fileOf(row({ output: 3 })), 'math500', /r\.jsonl:1: "output" should be a string/],
    ['another benchmark\'s rows', fileOf(row({ bench: 'aime24' })), 'math500', /r\.jsonl:1: "bench" is "aime24", but --bench is math500/],
    ['letters as math gold', fileOf(row({ bench: undefined, gold: 'B' })), 'math500', /r\.jsonl:1: "gold" is the letter "B".*gpqa results file/],
    ['math gold for gpqa', fileOf(row({ bench: 'gpqa', choices: ['a', 'b', 'c', 'd'] })), 'gpqa', /r\.jsonl:1: "gold" should be a letter A–D/],
    ['gpqa without choices', fileOf(row({ bench: 'gpqa', gold: 'C' })), 'gpqa', /r\.jsonl:1: "choices" should be the four choice texts/],
    ['aime gold not an integer', fileOf(row({ bench: 'aime24', gold: '\\frac12' })), 'aime24', /r\.jsonl:1: "gold" should be an integer/],
    ['bad JSON', fileOf(row({}), '{"output": '), 'math500', /r\.jsonl:2: not valid JSON/],
    ['not an object', fileOf('[1, 2]'), 'math500', /r\.jsonl:1: expected a JSON object/],
    ['empty file', '\n\n', 'math500', /r\.jsonl: the file has no rows \(empty\)/],
  ])('%s', (_name, text, bench, message) => {
    expect(() => parseRegradeRows(text, bench, 'r.jsonl')).toThrow(message);
  });

  it('a file that cannot be read', async () => {
    await expect(readRegradeRows(path.join(tmp, 'absent.jsonl'), 'math500')).rejects.toThrow(/absent\.jsonl: cannot read/);
  });

  it('an unknown --bench', async () => {
    await expect(gradeCommand({ bench: 'toy', input: 'x.jsonl' })).rejects.toThrow(/--bench should be one of math500, aime24, gpqa/);
  });
});

describe('re-grading', () => {
  it('replaces extracted and correct, keeps every other field, and counts changed verdicts', async () => {
    const rows = parseRegradeRows(fileOf(
      row({}),
      row({ index: 1, gold: '32349', output: '\\boxed{32, 349}', correct: true }),
      row({ index: 2, gold: '(2, 2), (6, 2)', output: '\\boxed{(2, 2)} and \\boxed{(6, 2)}' }),
    ), 'math500', 'r.jsonl');
    const { rows: graded, summary } = await regradeRows(rows, 'math500', checker);
    expect(graded.map((r) => [r['extracted'], r['correct']])).toEqual([['\\dfrac{14}{3}', true], ['32, 349', false], ['(2, 2), (6, 2)', true]]);
    expect(graded[0]).toMatchObject({ id: 'p0', tokensGenerated: 9, stopReason: 'stop_id' });
    expect(summary).toEqual({ n: 3, correct: 2, accuracy: 2 / 3, changed: 3, timeouts: 0 });
  }, 60_000);

  it('grades GPQA rows by letter and old rows without a bench field', async () => {
    const choices = ['1', '2', '3', '4'];
    const rows = parseRegradeRows(fileOf(
      row({ bench: 'gpqa', gold: 'C', choices, output: 'The answer is (C).' }),
      row({ bench: undefined, gold: 'A', choices, output: 'Answer: B' }),
    ), 'gpqa', 'r.jsonl');
    const { rows: graded } = await regradeRows(rows, 'gpqa', checker);
    expect(graded.map((r) => [r['extracted'], r['correct']])).toEqual([['C', true], ['B', false]]);
  });

  it('rank1 grade writes the rows to --out and prints the accuracy', async () => {
    const input = path.join(tmp, 'in.jsonl');
    const out = path.join(tmp, 'sub', 'out.jsonl');
    await writeFile(input, fileOf(row({}), row({ index: 1, gold: '7', output: 'The final answer is $8$.' })));
    const printed: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string) => (printed.push(chunk), true)) as typeof process.stdout.write;
    try {
      await gradeCommand({ bench: 'math500', input, out });
    } finally {
      process.stdout.write = write;
    }
    const written = (await readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(written.map((r) => r['correct'])).toEqual([true, false]);
    expect(printed.join('')).toMatch(/math500: 1\/2 correct = 50\.0%/);
  }, 60_000);
});

describe('bounded comparison', () => {
  it('a comparison past the deadline is "not equal" and flagged; the next one gets a fresh worker', async () => {
    const start = performance.now();
    // In-process this comparison takes about 24 s (the product is multiplied out in exact arithmetic).
    const slow = await checker.compare('\\prod_{k=1}^{100000} k', '100000!+1');
    const elapsed = performance.now() - start;
    expect(slow).toEqual({ equal: false, timedOut: true });
    expect(elapsed).toBeLessThan(5000); // the 1 s deadline plus slack for a loaded machine; unbounded it is ~24 s
    expect(await checker.compare('\\sec^2 y', '\\tan^2 y + 1')).toEqual({ equal: true, timedOut: false });
  }, 120_000);

  it('a re-graded row whose comparison timed out is wrong and says so; the summary counts it', async () => {
    const rows = parseRegradeRows(fileOf(row({ gold: '100000!+1', output: '\\boxed{\\prod_{k=1}^{100000} k}', gradeTimeout: false })), 'math500', 'r.jsonl');
    const { rows: graded, summary } = await regradeRows(rows, 'math500', checker);
    expect(graded[0]).toMatchObject({ correct: false, gradeTimeout: true });
    expect(summary.timeouts).toBe(1);
  }, 120_000);

  it('ordinary comparisons finish well inside the deadline (median and worst printed)', async () => {
    const pairs = [['\\frac{x}{7}+\\frac{2}{7}', '\\frac{x+2}{7}'], ['(3, 2)', '(p,q)=(3,2)'], ['x \\leq 5', '5 \\geq x'], ['1000,99', '1000.99'],
      ['\\{-2021, 2021\\}', '\\pm 2021'], ['y - x = -1', 'x - y = 1'], ['\\begin{pmatrix}0.5\\\\3\\end{pmatrix}', '\\begin{pmatrix}\\frac12\\\\3\\end{pmatrix}'],
      ['[-2, 7]', 'x \\in [-2,7]'], ['\\tan^2 y - 1', '\\sec^2 y'], ['e^{i\\pi}', '-1']];
    await checker.compare('1', '2'); // the worker's start is not a comparison
    const times: number[] = [];
    for (const [pred, gold] of pairs) {
      const start = performance.now();
      const verdict = await checker.compare(pred!, gold!);
      times.push(performance.now() - start);
      expect(verdict.timedOut).toBe(false);
    }
    times.sort((a, b) => a - b);
    console.log(`bounded comparison: median ${times[times.length >> 1]!.toFixed(1)} ms, worst ${times.at(-1)!.toFixed(1)} ms over ${times.length}`);
    expect(times.at(-1)!).toBeLessThan(1000);
  }, 120_000);
});
