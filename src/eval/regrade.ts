// `rank1 grade`: re-grades the rows of a results file (any `rank1 eval` output, old or new) with today's
// grader, without generating again. A row needs `output` (the model's text) and `gold` (and `choices` for
// GPQA); everything else in it is kept. Every bad input is an error naming the file, the line and the field.
import { readFile } from 'node:fs/promises';
import type { EvalProblem } from './benchmarks.ts';
import { gradeOutputBounded, sharedEquivalenceChecker } from './grade.ts';
import type { EquivalenceChecker } from './grade/bounded-equivalence.ts';

export const GRADE_BENCHMARKS = ['math500', 'aime24', 'gpqa'] as const;
export type GradeBenchmark = (typeof GRADE_BENCHMARKS)[number];

export class RegradeInputError extends Error {
  override name = 'RegradeInputError';
  constructor(readonly file: string, readonly line: number | undefined, reason: string) {
    super(line === undefined ? `${file}: ${reason}` : `${file}:${line}: ${reason}`);
  }
}

export interface RegradeRow {
  /** The row as read, every field kept. */
  row: Record<string, unknown>;
  line: number;
  problem: EvalProblem;
  output: string;
}

const isLetter = (gold: string) => /^[A-D]$/.test(gold.trim());

/** The problem a row is graded against, or an error naming the field that is missing or of the wrong kind. */
function problemOf(row: Record<string, unknown>, bench: GradeBenchmark, file: string, line: number, index: number): EvalProblem {
  const fail = (reason: string): never => {
    throw new RegradeInputError(file, line, reason);
  };
  if (row['bench'] !== undefined && row['bench'] !== bench) {
    fail(`"bench" is ${JSON.stringify(row['bench'])}, but --bench is ${bench}: this is a results file of another benchmark`);
  }
  if (!('output' in row)) fail('"output" is missing: the row has no model output to grade (was the run made with keepOutput off?)');
  if (typeof row['output'] !== 'string') fail(`"output" should be a string, got ${JSON.stringify(row['output'])}`);
  if (!('gold' in row)) fail('"gold" is missing: the row has no reference answer');
  const goldValue = row['gold'];
  if (typeof goldValue !== 'string' && typeof goldValue !== 'number') fail(`"gold" should be a string, got ${JSON.stringify(goldValue)}`);
  const gold = String(goldValue).trim();
  if (gold === '') fail('"gold" is empty');
  if (bench === 'gpqa') {
    if (!isLetter(gold)) fail(`"gold" should be a letter A–D for gpqa, got ${JSON.stringify(goldValue)}: is this a math results file?`);
    const choices = row['choices'];
    if (!Array.isArray(choices) || choices.length !== 4 || !choices.every((c) => typeof c === 'string')) {
      fail(`"choices" should be the four choice texts (A–D) for gpqa, got ${JSON.stringify(choices)}`);
    }
  } else if (isLetter(gold)) {
    fail(`"gold" is the letter ${JSON.stringify(gold)}, not a ${bench} answer: this looks like a gpqa results file`);
  } else if (bench === 'aime24' && !/^\d+$/.test(gold)) {
    fail(`"gold" should be an integer 0–999 for aime24, got ${JSON.stringify(goldValue)}`);
  }
  const id = row['id'] ?? row['index'] ?? index;
  return {
    index: typeof row['index'] === 'number' ? row['index'] : index,
    id: String(id),
    problem: typeof row['problem'] === 'string' ? row['problem'] : '',
    gold,
    ...(bench === 'gpqa' ? { choices: row['choices'] as string[] } : {}),
  };
}

/** Parses a results file for re-grading; an empty file, bad JSON or a bad row is an error. */
export function parseRegradeRows(text: string, bench: GradeBenchmark, file: string): RegradeRow[] {
  const rows: RegradeRow[] = [];
  for (const [k, line] of text.split('\n').entries()) {
    if (line.trim() === '') continue;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch (error) {
      throw new RegradeInputError(file, k + 1, `not valid JSON: ${(error as Error).message}`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new RegradeInputError(file, k + 1, 'expected a JSON object (one results row)');
    const row = json as Record<string, unknown>;
    rows.push({ row, line: k + 1, problem: problemOf(row, bench, file, k + 1, rows.length), output: row['output'] as string });
  }
  if (rows.length === 0) throw new RegradeInputError(file, undefined, 'the file has no rows (empty)');
  return rows;
}

export async function readRegradeRows(file: string, bench: GradeBenchmark): Promise<RegradeRow[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new RegradeInputError(file, undefined, `cannot read: ${(error as Error).message}`);
  }
  return parseRegradeRows(text, bench, file);
}

export interface RegradeSummary {
  n: number;
  correct: number;
  accuracy: number;
  /** Rows whose verdict differs from the `correct` the file held. */
  changed: number;
  /** Rows whose symbolic comparison ran past its deadline. */
  timeouts: number;
}

/** Each row with `extracted`, `correct` and (when it happened) `gradeTimeout` replaced by today's grade. */
export async function regradeRows(rows: readonly RegradeRow[], bench: GradeBenchmark, checker: EquivalenceChecker = sharedEquivalenceChecker()):
Promise<{ rows: Array<Record<string, unknown>>; summary: RegradeSummary }> {
  const graded: Array<Record<string, unknown>> = [];
  let correct = 0;
  let changed = 0;
  let timeouts = 0;
  for (const { row, problem, output } of rows) {
    const grade = await gradeOutputBounded(bench, output, problem, checker);
    const { gradeTimeout: _previous, ...rest } = row;
    graded.push({ ...rest, extracted: grade.extracted, correct: grade.correct, ...(grade.gradeTimeout ? { gradeTimeout: true } : {}) });
    if (grade.correct) correct++;
    if (typeof row['correct'] === 'boolean' && row['correct'] !== grade.correct) changed++;
    if (grade.gradeTimeout) timeouts++;
  }
  return { rows: graded, summary: { n: rows.length, correct, accuracy: correct / rows.length, changed, timeouts } };
}
