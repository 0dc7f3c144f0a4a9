// The three benchmarks of the paper's Table 1, read from the files their publishers ship:
//   math500  MATH-500 JSONL (problem, answer, solution, subject, level, unique_id)
//   aime24   AIME 2024 JSONL (problem, answer as number or string; id/ID, url, solution optional)
//   gpqa     GPQA-Diamond CSV (Question, Correct Answer, Incorrect Answer 1..3, among many other columns)
//   toy      the toy world's held-out JSONL (`rank1 world make`: problem, answer an integer), graded by exact
//            integer match
// Every malformed row is an error naming the file and line.
import { readFile } from 'node:fs/promises';
import { parse as parseCsv } from 'csv-parse/sync';
import { Random } from '../tensor/random.ts';
import { CHOICE_LETTERS, type ChoiceLetter } from './extract.ts';

export const BENCHMARKS = ['aime24', 'math500', 'gpqa', 'toy'] as const;
export type BenchmarkName = (typeof BENCHMARKS)[number];

/** Table 1's column titles. */
export const BENCHMARK_TITLES: Record<BenchmarkName, string> = { aime24: 'AIME24', math500: 'MATH500', gpqa: 'GPQA', toy: 'Toy' };

export function isBenchmarkName(name: string): name is BenchmarkName {
  return (BENCHMARKS as readonly string[]).includes(name);
}

export interface EvalProblem {
  /** Position in the data file (0-based, blank lines not counted); results are matched on it. */
  index: number;
  id: string;
  /** The problem (GPQA: the question alone, without its choices). */
  problem: string;
  /** The reference answer: a LaTeX string for MATH, the integer as written for AIME, a letter for GPQA. */
  gold: string;
  /** GPQA only: the four choices in the order shown, labelled A–D. */
  choices?: string[];
}

/** The seed every GPQA question's choice order derives from (with the row index), fixed so runs compare. */
export const GPQA_SHUFFLE_SEED = 1234;

export class BenchmarkDataError extends Error {
  override name = 'BenchmarkDataError';
  constructor(readonly file: string, readonly line: number | undefined, reason: string) {
    super(line === undefined ? `${file}: ${reason}` : `${file}:${line}: ${reason}`);
  }
}

export async function loadBenchmark(bench: BenchmarkName, file: string): Promise<EvalProblem[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new BenchmarkDataError(file, undefined, `cannot read the ${bench} data file: ${(error as Error).message}`);
  }
  return bench === 'gpqa' ? parseGpqaCsv(text, file) : parseMathJsonl(text, file, bench);
}

// ---- MATH-500 and AIME (JSONL) --------------------------------------------------------------------

/** Rows of a MATH-500 or AIME JSONL file; `file` is only for messages. */
export function parseMathJsonl(text: string, file: string, bench: 'math500' | 'aime24' | 'toy'): EvalProblem[] {
  const problems: EvalProblem[] = [];
  const lines = text.split('\n');
  for (const [k, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '') continue;
    const where = k + 1;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (error) {
      throw new BenchmarkDataError(file, where, `not valid JSON: ${(error as Error).message}`);
    }
    if (typeof row !== 'object' || row === null || Array.isArray(row)) throw new BenchmarkDataError(file, where, 'expected a JSON object per line');
    const r = row as Record<string, unknown>;
    // Qwen2.5-Math's AIME file also has `question`; s1's harness reads problem, then question.
    const problem = r['problem'] ?? r['question'];
    if (typeof problem !== 'string' || problem.trim() === '') throw new BenchmarkDataError(file, where, 'missing "problem" (a non-empty string)');
    const answer = r['answer'];
    if (bench === 'toy') {
      if (!(typeof answer === 'number' && Number.isInteger(answer)) && !(typeof answer === 'string' && /^\s*-?\d+\s*$/.test(answer))) {
        throw new BenchmarkDataError(file, where, `"answer" must be an integer (a number or a string of digits), got ${JSON.stringify(answer)}`);
      }
    } else if (bench === 'aime24') {
      if (!(typeof answer === 'string' && answer.trim() !== '') && !(typeof answer === 'number' && Number.isInteger(answer))) {
        throw new BenchmarkDataError(file, where, `"answer" must be an integer or a string, got ${JSON.stringify(answer)}`);
      }
    } else if (typeof answer !== 'string' || answer.trim() === '') {
      throw new BenchmarkDataError(file, where, `missing "answer" (a non-empty string), got ${JSON.stringify(answer)}`);
    }
    const index = problems.length;
    const idField = r['unique_id'] ?? r['id'] ?? r['ID'];
    const id = typeof idField === 'string' || typeof idField === 'number' ? String(idField) : String(index);
    problems.push({ index, id, problem, gold: String(answer).trim() });
  }
  if (problems.length === 0) throw new BenchmarkDataError(file, undefined, `no ${bench} problems in the file`);
  return problems;
}

// ---- GPQA-Diamond (CSV) ---------------------------------------------------------------------------

export const GPQA_COLUMNS = ['Question', 'Correct Answer', 'Incorrect Answer 1', 'Incorrect Answer 2', 'Incorrect Answer 3'] as const;

/**
 * The four choices of GPQA row `index` in the order shown, and the letter of the correct one. The order is a
 * Fisher–Yates shuffle seeded by (GPQA_SHUFFLE_SEED, index), so it depends on nothing but the row's position.
 */
export function shuffleGpqaChoices(correct: string, incorrect: readonly [string, string, string], index: number, seed = GPQA_SHUFFLE_SEED): { choices: string[]; gold: ChoiceLetter } {
  const rng = new Random((Math.imul(seed, 0x9e3779b1) ^ index) >>> 0);
  const order = rng.shuffle([0, 1, 2, 3]);
  const texts = [correct, ...incorrect];
  return { choices: order.map((k) => texts[k]!), gold: CHOICE_LETTERS[order.indexOf(0)]! };
}

interface CsvRecord {
  record: string[];
  raw: string;
  info: { lines: number };
}

/** Rows of a GPQA CSV (the published gpqa_diamond.csv, or any CSV with the same columns). */
export function parseGpqaCsv(text: string, file: string): EvalProblem[] {
  let records: CsvRecord[];
  try {
    records = parseCsv(text, { bom: true, info: true, raw: true, skip_empty_lines: true, relax_column_count: true }) as unknown as CsvRecord[];
  } catch (error) {
    const e = error as Error & { lines?: number };
    throw new BenchmarkDataError(file, e.lines, `not valid CSV: ${e.message}`);
  }
  // csv-parse reports the line a record ends on; a quoted field may span lines, so count back to its start.
  const startLine = (r: CsvRecord) => r.info.lines - (r.raw.replace(/^(?:\r?\n)+/, '').replace(/\r?\n$/, '').match(/\n/g)?.length ?? 0);
  const [header, ...rows] = records;
  if (!header) throw new BenchmarkDataError(file, undefined, 'empty CSV: expected a header row with the GPQA columns');
  const columns = header.record.map((name) => name.trim());
  const missing = GPQA_COLUMNS.filter((name) => !columns.includes(name));
  if (missing.length > 0) {
    throw new BenchmarkDataError(file, startLine(header), `missing column(s) ${missing.map((m) => `"${m}"`).join(', ')} (GPQA CSVs have ${GPQA_COLUMNS.map((m) => `"${m}"`).join(', ')})`);
  }
  const at = (name: string) => columns.indexOf(name);
  const idColumn = columns.indexOf('Record ID');
  const problems: EvalProblem[] = [];
  for (const row of rows) {
    const line = startLine(row);
    if (row.record.length !== columns.length) {
      throw new BenchmarkDataError(file, line, `${row.record.length} field(s), but the header has ${columns.length}`);
    }
    const field = (name: (typeof GPQA_COLUMNS)[number]) => {
      const value = row.record[at(name)]!.trim();
      if (value === '') throw new BenchmarkDataError(file, line, `empty "${name}"`);
      return value;
    };
    const question = field('Question');
    const correct = field('Correct Answer');
    const incorrect: [string, string, string] = [field('Incorrect Answer 1'), field('Incorrect Answer 2'), field('Incorrect Answer 3')];
    const index = problems.length;
    const { choices, gold } = shuffleGpqaChoices(correct, incorrect, index);
    const id = idColumn >= 0 && row.record[idColumn]!.trim() !== '' ? row.record[idColumn]!.trim() : String(index);
    problems.push({ index, id, problem: question, gold, choices });
  }
  if (problems.length === 0) throw new BenchmarkDataError(file, undefined, 'no GPQA questions in the file (only a header)');
  return problems;
}
