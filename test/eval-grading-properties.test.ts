// Properties of the grader: every rewrite of a value is equal to it; a perturbed value is not.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { answersEquivalent } from '../src/eval/grade/equivalence.ts';
import { extractMathAnswer } from '../src/eval/grade/extract-answer.ts';

const RUNS = { numRuns: 40 };
const graded = (output: string, gold: string) => answersEquivalent(extractMathAnswer(output), gold);

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
/** p/q in lowest terms, not an integer. */
const fraction = fc.tuple(fc.integer({ min: 1, max: 400 }), fc.integer({ min: 2, max: 400 }))
  .map(([p, q]) => [p / gcd(p, q), q / gcd(p, q)] as const).filter(([, q]) => q > 1);

describe('fractions', () => {
  it('every way of writing p/q is p/q', () => {
    fc.assert(fc.property(fraction, fc.integer({ min: 2, max: 9 }), ([p, q], k) => {
      const gold = `\\frac{${p}}{${q}}`;
      for (const form of [`\\boxed{\\dfrac{${p}}{${q}}}`, `\\boxed{\\tfrac{${p}}{${q}}}`, `The answer is $${p}/${q}$.`,
        `\\boxed{\\frac{${k * p}}{${k * q}}}`, `\\boxed{\\frac{-${p}}{-${q}}}`, `Final Answer: The final answer is $\\frac{${p}}{${q}}$. I hope it is correct.`]) {
        expect(graded(form, gold), form).toBe(true);
      }
    }), RUNS);
  });

  it('p/q off by one, negated or upside down is not p/q', () => {
    fc.assert(fc.property(fraction, ([p, q]) => {
      const gold = `\\frac{${p}}{${q}}`;
      expect(graded(`\\boxed{\\frac{${p + 1}}{${q}}}`, gold)).toBe(false);
      expect(graded(`\\boxed{-\\frac{${p}}{${q}}}`, gold)).toBe(false);
      expect(graded(`\\boxed{\\frac{${q}}{${p}}}`, gold)).toBe(false);
    }), RUNS);
  });
});

describe('integers', () => {
  it('units, currency, thousands separators and text leave the value', () => {
    fc.assert(fc.property(fc.integer({ min: 1000, max: 9_999_999 }), (n) => {
      const grouped = n.toLocaleString('en-US');
      for (const form of [`\\boxed{${grouped}}`, `\\boxed{\\$${n}}`, `\\boxed{${n} \\text{ cm}}`, `\\boxed{\\text{${n}}}`, `Answer: ${n}`, `\\boxed{${n}.0}`]) {
        expect(graded(form, String(n)), form).toBe(true);
      }
    }), RUNS);
  });

  it('n ± 1 and −n are not n', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 99_999_999 }), (n) => {
      for (const wrong of [n + 1, n - 1, -n]) expect(graded(`\\boxed{${wrong}}`, String(n)), String(wrong)).toBe(false);
    }), RUNS);
  });
});

describe('lists, sets and intervals', () => {
  const distinct = fc.uniqueArray(fc.integer({ min: -50, max: 50 }), { minLength: 2, maxLength: 5 });

  it('a list in any order (or as a set) is the list; a missing element or two glued elements are not', () => {
    fc.assert(fc.property(distinct, (items) => {
      const gold = items.join(', ');
      expect(graded(`\\boxed{${[...items].reverse().join(', ')}}`, gold)).toBe(true);
      expect(graded(`\\boxed{\\{${items.join(', ')}\\}}`, gold)).toBe(true);
      expect(graded(`\\boxed{${items.slice(1).join(', ')}}`, gold)).toBe(false);
      const [a, b] = items.map(Math.abs);
      expect(graded(`\\boxed{${a}, ${b}}`, `${a}${b}`)).toBe(false);
    }), RUNS);
  });

  it('an interval keeps its brackets', () => {
    fc.assert(fc.property(fc.integer({ min: -100, max: 100 }), fc.integer({ min: 1, max: 100 }), fc.boolean(), fc.boolean(), (a, width, openLeft, openRight) => {
      const b = a + width;
      const [l, r] = [openLeft ? '(' : '[', openRight ? ')' : ']'];
      const gold = `${l}${a}, ${b}${r}`;
      expect(graded(`\\boxed{\\left${l} ${a},${b} \\right${r}}`, gold)).toBe(true);
      expect(graded(`\\boxed{${openLeft ? '[' : '('}${a}, ${b}${r}}`, gold)).toBe(false);
      expect(graded(`\\boxed{${l}${a}, ${b + 1}${r}}`, gold)).toBe(false);
    }), RUNS);
  });
});

describe('expressions', () => {
  const nonzero = fc.integer({ min: -9, max: 9 }).filter((k) => k !== 0);

  it('ax + b in another order or over a common denominator is ax + b; (a+1)x + b is not', () => {
    fc.assert(fc.property(nonzero, nonzero, fc.integer({ min: 2, max: 9 }), (a, b, d) => {
      const gold = `${a}x + ${b}`;
      expect(graded(`\\boxed{${b} + ${a}x}`, gold)).toBe(true);
      expect(graded(`\\boxed{\\frac{${a * d}x + ${b * d}}{${d}}}`, gold)).toBe(true);
      expect(graded(`\\boxed{${a + 1}x + ${b}}`, gold)).toBe(false);
    }), RUNS);
  });

  it('an equation is its mirror and its negation; inequalities flip with their sides', () => {
    fc.assert(fc.property(nonzero, nonzero, (a, b) => {
      expect(graded(`\\boxed{${b} = ${a}x}`, `${a}x = ${b}`)).toBe(true);
      expect(graded(`\\boxed{${-a}x = ${-b}}`, `${a}x = ${b}`)).toBe(true);
      expect(graded(`\\boxed{${b} \\geq x}`, `x \\leq ${b}`)).toBe(true);
      expect(graded(`\\boxed{x < ${b}}`, `x \\leq ${b}`)).toBe(false);
    }), RUNS);
  });
});
