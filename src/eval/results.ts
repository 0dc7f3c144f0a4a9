// Per-problem results, one JSON object a line, appended and flushed as each problem finishes so that a run
// stopped at any point can be resumed with the same --out: problems already in the file are skipped.
import { mkdir, open, readFile, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { StopReason } from '../model/generate.ts';
import { BENCHMARKS, isBenchmarkName, type BenchmarkName, type EvalProblem } from './benchmarks.ts';

export interface ResultRow {
  bench: BenchmarkName;
  index: number;
  id: string;
  problem: string;
  gold: string;
  extracted: string | null;
  correct: boolean;
  tokensGenerated: number;
  stopReason: StopReason;
  seconds: number;
  /** GPQA: the choices as shown (A–D). */
  choices?: string[];
  /** The generated text (special tokens kept), for re-grading and reading. */
  output?: string;
  /** Set when the answer's symbolic comparison ran past its deadline (graded wrong). */
  gradeTimeout?: boolean;
  /** The adapters zero-ablated for the whole generation (`rank1 eval --ablate`): `mlp`, `attention`, or a
   *  selection such as `q_proj,model.layers.3.mlp.up_proj`; absent when none were. */
  ablated?: string;
}

export class ResultsFileError extends Error {
  override name = 'ResultsFileError';
  constructor(readonly file: string, readonly line: number | undefined, reason: string) {
    super(line === undefined ? `${file}: ${reason}` : `${file}:${line}: ${reason}`);
  }
}

const STOP_REASONS: readonly string[] = ['stop_id', 'stop_string', 'max_tokens'];

function parseRow(json: unknown, file: string, line: number): ResultRow {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ResultsFileError(file, line, 'expected a JSON object');
  const r = json as Record<string, unknown>;
  const fail = (field: string, expected: string) => {
    throw new ResultsFileError(file, line, `"${field}" should be ${expected}, got ${JSON.stringify(r[field])}`);
  };
  if (typeof r['bench'] !== 'string' || !isBenchmarkName(r['bench'])) fail('bench', `one of ${BENCHMARKS.join(', ')}`);
  if (typeof r['index'] !== 'number' || !Number.isInteger(r['index']) || r['index'] < 0) fail('index', 'a non-negative integer');
  if (typeof r['problem'] !== 'string') fail('problem', 'a string');
  if (typeof r['gold'] !== 'string') fail('gold', 'a string');
  if (r['extracted'] !== null && typeof r['extracted'] !== 'string') fail('extracted', 'a string or null');
  if (typeof r['correct'] !== 'boolean') fail('correct', 'true or false');
  if (typeof r['tokensGenerated'] !== 'number' || r['tokensGenerated'] < 0) fail('tokensGenerated', 'a non-negative number');
  if (typeof r['stopReason'] !== 'string' || !STOP_REASONS.includes(r['stopReason'])) fail('stopReason', STOP_REASONS.join(' or '));
  if (typeof r['seconds'] !== 'number') fail('seconds', 'a number');
  if (r['ablated'] !== undefined && (typeof r['ablated'] !== 'string' || r['ablated'] === '')) fail('ablated', 'a module selection such as "mlp" (or absent)');
  return { ...(r as unknown as ResultRow), id: String(r['id'] ?? r['index']) };
}

export interface ResultsFile {
  rows: ResultRow[];
  /** True when the last line was cut off mid-write (a run killed while appending); it is not in `rows`. */
  truncatedTail: boolean;
}

/**
 * Reads a results file; a missing file is empty. Every line must be a result row, except that a last line
 * without its newline that does not parse is reported as `truncatedTail` (the process died mid-write).
 */
export async function readResults(file: string): Promise<ResultsFile> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { rows: [], truncatedTail: false };
    throw new ResultsFileError(file, undefined, `cannot read: ${(error as Error).message}`);
  }
  const lines = text.split('\n');
  const rows: ResultRow[] = [];
  let truncatedTail = false;
  for (const [k, line] of lines.entries()) {
    if (line.trim() === '') continue;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch (error) {
      if (k === lines.length - 1) {
        truncatedTail = true;
        break;
      }
      throw new ResultsFileError(file, k + 1, `not valid JSON: ${(error as Error).message}`);
    }
    rows.push(parseRow(json, file, k + 1));
  }
  return { rows, truncatedTail };
}

/**
 * The rows of `file` that a resumed run keeps, by problem index. Every row must belong to this benchmark and
 * to the problem at its index (same problem text), else the file is from another run and resuming would mix
 * results: that is an error, as is a problem listed twice.
 */
export function matchResumedRows(rows: readonly ResultRow[], problems: readonly EvalProblem[], bench: BenchmarkName, file: string): Map<number, ResultRow> {
  const done = new Map<number, ResultRow>();
  // By the problem's own index: a sharded run (--shard) holds a share of the problems, not a prefix.
  const byIndex = new Map(problems.map((p) => [p.index, p]));
  for (const row of rows) {
    if (row.bench !== bench) throw new ResultsFileError(file, undefined, `holds ${row.bench} results (problem ${row.index}), but this run is ${bench}: use another --out`);
    const problem = byIndex.get(row.index);
    if (problem && problem.problem !== row.problem) {
      throw new ResultsFileError(file, undefined, `problem ${row.index} in the results file is not problem ${row.index} of the data file (different --data?): `
        + `results have ${JSON.stringify(row.problem.slice(0, 60))}…, data has ${JSON.stringify(problem.problem.slice(0, 60))}…`);
    }
    if (done.has(row.index)) throw new ResultsFileError(file, undefined, `problem ${row.index} appears twice`);
    done.set(row.index, row);
  }
  return done;
}

/** Appends rows to a results file, each written and flushed to disk before `append` resolves. */
export class ResultsWriter {
  private constructor(private readonly handle: FileHandle) {}

  /** Opens `file` for appending (creating its folder); with `keepRows`, first rewrites it to hold exactly those (dropping a cut-off last line). */
  static async open(file: string, keepRows?: readonly ResultRow[]): Promise<ResultsWriter> {
    await mkdir(dirname(file), { recursive: true });
    if (keepRows) await writeFile(file, keepRows.map((row) => `${JSON.stringify(row)}\n`).join(''), 'utf8');
    return new ResultsWriter(await open(file, 'a'));
  }

  async append(row: ResultRow): Promise<void> {
    await this.handle.write(`${JSON.stringify(row)}\n`);
    await this.handle.datasync();
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

export interface ResultsSummary {
  n: number;
  correct: number;
  /** correct / n (0 when n is 0). */
  accuracy: number;
  meanTokens: number;
}

export function summarize(rows: readonly ResultRow[]): ResultsSummary {
  const n = rows.length;
  const correct = rows.filter((r) => r.correct).length;
  const tokens = rows.reduce((sum, r) => sum + r.tokensGenerated, 0);
  return { n, correct, accuracy: n === 0 ? 0 : correct / n, meanTokens: n === 0 ? 0 : tokens / n };
}
