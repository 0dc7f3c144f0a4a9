// One output graded against one problem: the benchmark decides how the answer is read and compared.
import type { BenchmarkName, EvalProblem } from './benchmarks.ts';
import { extractChoiceLetter, extractMathAnswer } from './extract.ts';
import { isAimeEquivalent, isMathEquivalent } from './math-equivalence.ts';

export interface Grade {
  /** The answer read from the output (null when none could be read). */
  extracted: string | null;
  correct: boolean;
}

export function gradeOutput(bench: BenchmarkName, output: string, problem: EvalProblem): Grade {
  switch (bench) {
    case 'gpqa': {
      const extracted = extractChoiceLetter(output, problem.choices);
      return { extracted, correct: extracted !== null && extracted === problem.gold };
    }
    case 'aime24': {
      const extracted = extractMathAnswer(output);
      return { extracted, correct: isAimeEquivalent(extracted, problem.gold) };
    }
    case 'toy': {
      // Exact integer match: the extracted answer must be an integer, equal to the gold one.
      const extracted = extractMathAnswer(output);
      const integer = extracted === null ? null : /^\s*(-?\d+)\s*$/.exec(extracted);
      return { extracted, correct: integer !== null && BigInt(integer[1]!) === BigInt(problem.gold) };
    }
    case 'math500': {
      const extracted = extractMathAnswer(output);
      return { extracted, correct: isMathEquivalent(extracted, problem.gold) };
    }
  }
}
