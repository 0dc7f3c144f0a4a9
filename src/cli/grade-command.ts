// `rank1 grade --bench math500|aime24|gpqa --input FILE.jsonl [--out FILE]`: re-grades a results file with the
// grader `rank1 eval` uses. Rows go to --out (or stdout); the accuracy line to stdout (stderr without --out).
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { GRADE_BENCHMARKS, readRegradeRows, regradeRows, type GradeBenchmark } from '../eval/regrade.ts';
import { sharedEquivalenceChecker } from '../eval/grade.ts';

export interface GradeCommandOptions {
  bench: string;
  input: string;
  out?: string;
}

export async function gradeCommand(options: GradeCommandOptions): Promise<void> {
  if (!(GRADE_BENCHMARKS as readonly string[]).includes(options.bench)) {
    throw new Error(`--bench should be one of ${GRADE_BENCHMARKS.join(', ')}, got ${JSON.stringify(options.bench)}`);
  }
  const bench = options.bench as GradeBenchmark;
  const rows = await readRegradeRows(options.input, bench);
  const checker = sharedEquivalenceChecker();
  try {
    const { rows: graded, summary } = await regradeRows(rows, bench, checker);
    const text = graded.map((row) => `${JSON.stringify(row)}\n`).join('');
    if (options.out !== undefined) {
      await mkdir(dirname(options.out), { recursive: true });
      await writeFile(options.out, text, 'utf8');
    } else {
      process.stdout.write(text);
    }
    const line = `${bench}: ${summary.correct}/${summary.n} correct = ${(100 * summary.accuracy).toFixed(1)}%`
      + ` (${summary.changed} verdicts changed from the file's, ${summary.timeouts} comparisons timed out)\n`;
    (options.out !== undefined ? process.stdout : process.stderr).write(line);
  } finally {
    await checker.close();
  }
}
