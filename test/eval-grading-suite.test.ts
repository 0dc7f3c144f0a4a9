// rank1's grading suite (test/fixtures/grading/own-cases.jsonl: true rewrites and near misses built from
// MATH-500 and AIME answers, and GPQA-style rows written for it), and agreement with huggingface/Math-Verify's
// own test cases (test/fixtures/grading/math-verify-cases.jsonl, see math-verify-SOURCE.md).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BenchmarkName } from '../src/eval/benchmarks.ts';
import { gradeOutput } from '../src/eval/grade.ts';
import { answerParts } from '../src/eval/grade/answer-parts.ts';
import { answersEquivalent } from '../src/eval/grade/equivalence.ts';
import { extractMathAnswer } from '../src/eval/grade/extract-answer.ts';
import { extractChoiceLetter } from '../src/eval/grade/gpqa.ts';

const fixtures = path.resolve(import.meta.dirname, 'fixtures/grading');
const readJsonl = <T>(name: string): T[] => readFileSync(path.join(fixtures, name), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as T);

interface OwnCase {
  id: string;
  bench: BenchmarkName;
  kind: string;
  gold: string;
  output: string;
  expected: boolean;
  choices?: string[];
}

const own = readJsonl<OwnCase>('own-cases.jsonl');

describe('own grading suite', () => {
  it('has at least 300 cases, right and wrong ones, on every benchmark', () => {
    expect(own.length).toBeGreaterThanOrEqual(300);
    expect(own.filter((c) => c.expected).length).toBeGreaterThan(100);
    expect(own.filter((c) => !c.expected).length).toBeGreaterThan(100);
    expect(new Set(own.map((c) => c.bench))).toEqual(new Set(['math500', 'aime24', 'gpqa']));
  });

  it('covers each kind the issue names', () => {
    const kinds = new Set(own.map((c) => c.kind));
    for (const kind of ['tfrac', 'dfrac', 'cfrac', 'percent-word', 'percent-pct', 'textnormal-unit', 'quad', 'decimal-comma', 'labelled-tuple',
      'labelled-function', 'labelled-lengths', 'chained-equals', 'approx', 'plus-minus-set', 'no-glue-comma', 'no-glue-and', 'symbolic-trig',
      'symbolic-sum', 'equation-times-minus-one', 'inequality-flipped', 'interval-open-vs-closed', 'set-missing', 'matrix-same', 'multiple-boxes',
      'early-box-closing-statement', 'answer-label-prose', 'last-inline-math', 'aime-s1-answer-section', 'integer-off-by-one', 'integer-sign',
      'fraction-swapped', 'interval-open-closed', 'list-missing-element', 'gpqa-letter']) {
      expect(kinds, kind).toContain(kind);
    }
  });

  it.each(own.map((c) => [c.id, c] as const))('%s', (_id, c) => {
    const problem = { index: 0, id: c.id, problem: '', gold: c.gold, ...(c.choices ? { choices: c.choices } : {}) };
    expect(gradeOutput(c.bench, c.output, problem).correct, `${c.gold} ← ${c.output}`).toBe(c.expected);
  });
});

// ---- Math-Verify's test cases ------------------------------------------------------------------------

interface MathVerifyCase {
  source: string;
  kind: 'math' | 'letter';
  gold?: string;
  pred: string;
  expected: boolean | string | null;
  precision?: number;
}

/**
 * How Math-Verify's tests read both strings: each goes through answer extraction. A string with no math
 * delimiters, box or prose is an answer as it stands (its tests pass bare `7425000` or `\frac{10}{9}`).
 */
function readAnswer(text: string, parts?: number): string | null {
  return extractMathAnswer(text, parts === undefined ? {} : { parts });
}

/** Our verdict on one Math-Verify case. */
function verdict(c: MathVerifyCase): boolean | string | null {
  if (c.kind === 'letter') return extractChoiceLetter(c.pred);
  const gold = readAnswer(c.gold!);
  if (gold === null) return false;
  const pred = readAnswer(c.pred, answerParts(gold).length);
  return answersEquivalent(pred, gold, { precision: c.precision ?? 6 });
}

export function mathVerifyAgreement(cases: readonly MathVerifyCase[]): { agree: number; total: number; disagreements: MathVerifyCase[] } {
  const disagreements = cases.filter((c) => verdict(c) !== c.expected);
  return { agree: cases.length - disagreements.length, total: cases.length, disagreements };
}

describe('agreement with Math-Verify\'s own test cases', () => {
  const cases = readJsonl<MathVerifyCase>('math-verify-cases.jsonl');

  it('agrees on at least 90% of them (the figure in the README)', () => {
    const { agree, total, disagreements } = mathVerifyAgreement(cases);
    const share = agree / total;
    const byTest = new Map<string, number>();
    for (const c of disagreements) byTest.set(c.source.split('::')[1]!, (byTest.get(c.source.split('::')[1]!) ?? 0) + 1);
    console.log(`Math-Verify agreement: ${agree}/${total} = ${(100 * share).toFixed(1)}%; disagreements by test: ${JSON.stringify(Object.fromEntries(byTest))}`);
    expect(total).toBeGreaterThan(250);
    expect(share).toBeGreaterThanOrEqual(0.9);
  });

  it('reads every multiple-choice case as Math-Verify does', () => {
    for (const c of cases.filter((x) => x.kind === 'letter')) expect(verdict(c), c.pred).toBe(c.expected);
  });
});
