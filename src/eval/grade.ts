// One output graded against one problem: the benchmark decides how the answer is read and compared.
//   math500  the final answer (grade/extract-answer.ts) against the reference, by grade/equivalence.ts;
//   aime24   the same reading; an exact integer match, else the same equivalence (`\frac{408}{2}` ≡ 204);
//   gpqa     the letter the output picks (grade/gpqa.ts) against the gold letter;
//   toy      exact integer match (the toy world's answers are digits).
// `gradeOutputBounded` is what `rank1 eval` and `rank1 grade` use: each symbolic comparison runs in a worker
// with a deadline and a timeout is recorded as `gradeTimeout`. `gradeOutput` is the same verdict computed
// in-process without a bound, for callers that grade toy answers or need a synchronous result.
import type { BenchmarkName, EvalProblem } from './benchmarks.ts';
import { answerParts } from './grade/answer-parts.ts';
import { EquivalenceChecker } from './grade/bounded-equivalence.ts';
import { answersEquivalent } from './grade/equivalence.ts';
import { extractMathAnswer } from './grade/extract-answer.ts';
import { extractChoiceLetter } from './grade/gpqa.ts';
import { isAimeEquivalent } from './math-equivalence.ts';

export interface Grade {
  /** The answer read from the output (null when none could be read). */
  extracted: string | null;
  correct: boolean;
  /** Set when the symbolic comparison ran past its deadline (the answer is then graded wrong). */
  gradeTimeout?: boolean;
}

/** How many parts the reference answer has (`(2, 2), (6, 2)` has two): that many boxes are read together. */
function referenceParts(gold: string): number {
  try {
    return Math.max(1, answerParts(gold).length);
  } catch {
    return 1;
  }
}

function extractFor(bench: BenchmarkName, output: string, problem: EvalProblem): string | null {
  if (bench === 'gpqa') return extractChoiceLetter(output, problem.choices);
  return extractMathAnswer(output, { parts: bench === 'math500' ? referenceParts(problem.gold) : 1 });
}

function toyCorrect(extracted: string | null, gold: string): boolean {
  const integer = extracted === null ? null : /^\s*(-?\d+)\s*$/.exec(extracted);
  return integer !== null && BigInt(integer[1]!) === BigInt(gold);
}

/** The grade, with no bound on the symbolic comparison's time. */
export function gradeOutput(bench: BenchmarkName, output: string, problem: EvalProblem): Grade {
  const extracted = extractFor(bench, output, problem);
  switch (bench) {
    case 'gpqa':
      return { extracted, correct: extracted !== null && extracted === problem.gold };
    case 'toy':
      return { extracted, correct: toyCorrect(extracted, problem.gold) };
    case 'aime24':
      return { extracted, correct: isAimeEquivalent(extracted, problem.gold) || answersEquivalent(extracted, problem.gold) };
    case 'math500':
      return { extracted, correct: answersEquivalent(extracted, problem.gold) };
  }
}

let shared: EquivalenceChecker | undefined;

/** The process's checker (one worker, started on first use). */
export function sharedEquivalenceChecker(): EquivalenceChecker {
  shared ??= new EquivalenceChecker();
  return shared;
}

/** The grade, each symbolic comparison bounded by the checker's deadline. */
export async function gradeOutputBounded(bench: BenchmarkName, output: string, problem: EvalProblem, checker = sharedEquivalenceChecker()): Promise<Grade> {
  const extracted = extractFor(bench, output, problem);
  if (bench === 'gpqa' || bench === 'toy') return gradeOutput(bench, output, problem);
  if (bench === 'aime24' && isAimeEquivalent(extracted, problem.gold)) return { extracted, correct: true };
  const verdict = await checker.compare(extracted, problem.gold);
  return { extracted, correct: verdict.equal, ...(verdict.timedOut ? { gradeTimeout: true } : {}) };
}
