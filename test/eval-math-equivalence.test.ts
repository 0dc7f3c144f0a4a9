// Answer equivalence: handwritten pairs for every normalisation rule, then the real MATH-500 and AIME24 rows
// from ../shared (skipped with a message where it is absent).
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { extractMathAnswer, lastBoxedContent } from '../src/eval/extract.ts';
import { aimeInteger, evaluateNumber, isAimeEquivalent, isMathEquivalent, normalizeMathAnswer } from '../src/eval/math-equivalence.ts';

// [predicted, reference, rule]
const EQUIVALENT: [string, string, string][] = [
  ['\\left( 3, \\frac{\\pi}{2} \\right)', '(3,\\frac{\\pi}{2})', '\\left/\\right'],
  ['\\dfrac{3}{4}', '\\frac{3}{4}', '\\dfrac'],
  ['\\tfrac{3}{4}', '\\frac34', '\\tfrac and \\frac34'],
  ['10,\\!080', '10080', '\\! and thousands'],
  ['1,\\!000,\\!000', '1000000', 'thousands with \\!'],
  ['1,000', '1000', 'comma thousands'],
  ['2\\,\\sqrt{3}', '2\\sqrt3', '\\, and \\sqrt3'],
  ['5 \\text{ cm}', '5', '\\text{ cm} unit'],
  ['864 \\mbox{ inches}^2', '864', '\\mbox unit with power'],
  ['15\\mbox{cm}^2', '15', '\\mbox unit without space'],
  ['30 degrees', '30', 'degrees word'],
  ['90^\\circ', '90', '^\\circ'],
  ['90^{\\circ}', '90', '^{\\circ}'],
  ['\\$18.90', '18.90', '\\$'],
  ['$18.9$', '18.90', '$ and trailing zero'],
  ['42.', '42', 'trailing period'],
  ['50\\%', '50', '\\%'],
  ['0.5', '\\frac{1}{2}', '0.5 ≡ 1/2'],
  ['1/2', '\\frac{1}{2}', 'a/b'],
  ['-3/4', '-\\frac{3}{4}', 'negative a/b'],
  ['\\frac12', '\\frac{1}{2}', '\\frac12'],
  ['\\frac 59', '\\frac{5}{9}', '\\frac 59'],
  ['\\frac9{19}', '\\frac{9}{19}', '\\frac9{19}'],
  ['\\sqrt2', '\\sqrt{2}', '\\sqrt2'],
  ['11\\sqrt2', '11\\sqrt{2}', 'coefficient \\sqrt2'],
  ['x = 5', '5', 'leading x ='],
  ['k=-2', '-2', 'leading k='],
  ['x \\in [-2,7]', '[-2, 7]', 'x \\in interval'],
  ['( 1, -2 )', '(1,-2)', 'tuple spaces'],
  ['(0.5, 3)', '(\\frac{1}{2}, 3)', 'tuple element-wise numeric'],
  ['\\left(\\frac{3}{5},\\frac{8}{3}\\right]', '(0.6, \\frac{8}{3}]', 'half-open interval'],
  ['(-\\infty, 2) \\cup (3, \\infty)', '(-\\infty,2)\\cup(3,\\infty)', 'union of intervals'],
  ['-2, 1', '1,-2', 'unordered list of solutions'],
  ['\\{1\\pm\\sqrt{5},-2\\}', '\\{-2, 1 \\pm \\sqrt5\\}', 'set in any order'],
  ['\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}', '\\begin{pmatrix}-\\frac13\\\\ \\frac{2}{3}\\end{pmatrix}', 'pmatrix entries'],
  ['1.4142136', '\\sqrt{2}', 'relative tolerance for computed values'],
  ['0.150', '.15', 'decimal literals by value'],
  ['6366.1977', '\\frac{20000}{\\pi}', 'numeric with \\pi'],
  ['137.5', '137 \\frac{1}{2}', 'mixed number'],
  ['1\\frac{4}{5}', '\\frac{9}{5}', 'mixed number vs fraction'],
  ['\\text{Evelyn}', 'Evelyn', '\\text wrapper'],
  ['\\textbf{east}', '\\text{East}', 'words ignore case'],
  ['(C)', '\\text{(C)}', 'choice letter'],
  ['.35625', '0.35625', 'leading-dot decimal'],
  ['\\frac{270}7\\text{ degrees}', '\\frac{270}{7}', 'fraction with unit'],
  ['y=2x+3', 'y = 2x + 3', 'equation spaces'],
  ['2x+3', 'y = 2x + 3', 'y = removed'],
  ['\\displaystyle\\frac{1}{4}', '0.25', '\\displaystyle'],
  ['2 \\cdot 3', '6', '\\cdot numeric'],
  ['\\sqrt{8}', '2\\sqrt{2}', 'numeric radicals'],
];

const NOT_EQUIVALENT: [string, string, string][] = [
  ['3', '4', 'different integers'],
  ['0.333', '\\frac{1}{3}', 'rounded decimal beyond tolerance'],
  ['3.0000001', '3', 'written-out numbers compare exactly'],
  ['999999', '1,000,000', 'no tolerance between integers'],
  ['(1,2)', '(1,2]', 'open vs half-open interval'],
  ['(1,2)', '(2,1)', 'ordered tuple'],
  ['(1,2)', '[1,2]', 'bracket kind'],
  ['1,2', '1,2,3', 'list length'],
  ['2m', '2', 'a variable is not a unit without a space'],
  ['\\frac{1}{2}', '\\frac{2}{1}', 'swapped fraction'],
  ['x^2+1', 'x^2-1', 'polynomial'],
  ['\\sqrt{2}', '2', 'sqrt vs integer'],
  ['1000', '100', 'thousands mistaken'],
  ['1,23', '123', 'not a thousands separator'],
  ['\\text{west}', '\\text{east}', 'different words'],
  ['5x-7y+11z+4=0', '5x - 7y + 11z - 4 = 0', 'equations'],
  ['(a+5)(b+2)', '(a+2)(b+5)', 'products are not tuples'],
  ['', '5', 'empty prediction'],
  ['6-5i', '6+5i', 'complex numbers'],
];

describe('isMathEquivalent', () => {
  it.each(EQUIVALENT)('%s ≡ %s (%s)', (a, b) => {
    expect(isMathEquivalent(a, b)).toBe(true);
    expect(isMathEquivalent(b, a)).toBe(true);
  });

  it.each(NOT_EQUIVALENT)('%s ≢ %s (%s)', (a, b) => {
    expect(isMathEquivalent(a, b)).toBe(false);
    expect(isMathEquivalent(b, a)).toBe(false);
  });

  it('has at least 40 handwritten pairs, both kinds', () => {
    expect(EQUIVALENT.length + NOT_EQUIVALENT.length).toBeGreaterThanOrEqual(40);
  });

  it('treats a missing prediction as wrong', () => {
    expect(isMathEquivalent(null, '5')).toBe(false);
    expect(isMathEquivalent(undefined, '5')).toBe(false);
  });

  it('is idempotent on the counterexamples fast-check has found', () => {
    // `1 000` is two answers; written back as `1,000` a second pass read it as one thousand.
    for (const s of ['0 000', '1 000', '32, 349', '\\{,} 0', '\\^\\circ\\text{ and }', '6 \\text{ and } 8']) {
      const once = normalizeMathAnswer(s);
      expect(normalizeMathAnswer(once), s).toBe(once);
    }
    expect(normalizeMathAnswer('1 000')).toBe('1, 000');
    expect(isMathEquivalent('1 000', '1000')).toBe(false);
    expect(isMathEquivalent('1 000', '1, 000')).toBe(true);
  });

  it('is reflexive and normalisation is idempotent on arbitrary strings', () => {
    const latexish = fc.string({ unit: fc.constantFrom(...'0123456789.,-+/^{}()[] $\\xk=%!'.split(''), '\\frac', '\\sqrt', '\\text{ cm}', '\\left', '\\pi', '\\circ', '\\cup'), maxLength: 16 });
    fc.assert(fc.property(fc.oneof(fc.string({ maxLength: 30 }), latexish), (s) => {
      const once = normalizeMathAnswer(s);
      expect(normalizeMathAnswer(once)).toBe(once);
      if (once !== '') expect(isMathEquivalent(s, s)).toBe(true);
    }), { numRuns: 2000 });
  });

  it('compares integers numerically whatever their formatting', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 10_000_000 }), (n) => {
      expect(isMathEquivalent(n.toLocaleString('en-US'), String(n))).toBe(true);
      expect(isMathEquivalent(extractMathAnswer(`Answer: $\\boxed{${n.toLocaleString('en-US')}}$`), String(n))).toBe(true);
      expect(isMathEquivalent(String(n + 1), String(n))).toBe(false);
    }));
  });
});

describe('evaluateNumber', () => {
  it('evaluates the numeric LaTeX subset and refuses the rest', () => {
    expect(evaluateNumber('\\frac{1}{2}')).toBe(0.5);
    expect(evaluateNumber('2\\sqrt{9}')).toBe(6);
    expect(evaluateNumber('-\\frac{\\pi}{2}')).toBeCloseTo(-Math.PI / 2, 12);
    expect(evaluateNumber('2^{10}')).toBe(1024);
    expect(evaluateNumber('\\sqrt[3]{27}')).toBeCloseTo(3, 12);
    expect(evaluateNumber('(1+2)*3')).toBe(9);
    expect(evaluateNumber('x+1')).toBeNull();
    expect(evaluateNumber('1+2i')).toBeNull();
    expect(evaluateNumber('1,2')).toBeNull();
    expect(evaluateNumber('')).toBeNull();
  });
});

describe('isAimeEquivalent', () => {
  it('matches integers exactly, ignoring leading zeros and formatting', () => {
    expect(isAimeEquivalent('033', '33')).toBe(true);
    expect(isAimeEquivalent('33', 33)).toBe(true);
    expect(isAimeEquivalent('\\text{204}', '204')).toBe(true);
    expect(isAimeEquivalent('204.', '204')).toBe(true);
    expect(isAimeEquivalent('$024$', 24)).toBe(true);
    expect(isAimeEquivalent('204', '205')).toBe(false);
    expect(isAimeEquivalent('204.5', '204')).toBe(false);
    expect(isAimeEquivalent('\\frac{408}{2}', '204')).toBe(false); // AIME asks for the integer itself
    expect(isAimeEquivalent(null, '204')).toBe(false);
    expect(aimeInteger('x')).toBeNull();
  });
});

// ---- real rows ------------------------------------------------------------------------------------

const shared = path.resolve(import.meta.dirname, '../../shared/data');
const readJsonl = (file: string) => readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Record<string, unknown>);

const math500File = path.join(shared, 'math500/test.jsonl');
describe.skipIf(!existsSync(math500File))('MATH-500 rows (../shared/data/math500/test.jsonl)', () => {
  const rows = existsSync(math500File) ? readJsonl(math500File) : [];

  it('judges every gold answer equivalent to itself boxed and extracted', () => {
    expect(rows).toHaveLength(500);
    const failures = rows.filter((r) => !isMathEquivalent(extractMathAnswer(`<|im_start|>answer\nAnswer: $\\boxed{${r['answer']}}$<|im_end|>`), r['answer'] as string));
    expect(failures.map((r) => r['answer'])).toEqual([]);
  });

  it('judges the boxed answer of at least 97% of the reference solutions equivalent to the gold answer', () => {
    const failures = rows.filter((r) => !isMathEquivalent(lastBoxedContent(r['solution'] as string), r['answer'] as string));
    const rate = 1 - failures.length / rows.length;
    expect(rate, `failures: ${failures.map((r) => `${r['unique_id']}: ${r['answer']}`).join('; ')}`).toBeGreaterThanOrEqual(0.97);
  });

  it('is not lenient: of the distinct gold answers, only the same values written differently are equivalent', () => {
    const answers = [...new Set(rows.map((r) => r['answer'] as string))];
    const pairs: string[] = [];
    for (let i = 0; i < answers.length; i++) {
      for (let j = i + 1; j < answers.length; j++) if (isMathEquivalent(answers[i], answers[j]!)) pairs.push(`${answers[i]} ≡ ${answers[j]}`);
    }
    expect(pairs.sort()).toEqual([
      '1,-2 ≡ -2,1', '10,\\!080 ≡ 10080', '120^\\circ ≡ 120', '15 ≡ 15\\mbox{ cm}^2', '2 \\sqrt{5} ≡ 2\\sqrt{5}', '30^\\circ ≡ 30',
      '36 ≡ 36^\\circ', '36 ≡ \\$36', '36^\\circ ≡ \\$36', '5 ≡ x=5', '90^\\circ ≡ 90', '\\frac{1}{4} ≡ \\frac14',
    ].sort());
  });
});
if (!existsSync(math500File)) console.warn(`skipping MATH-500 grading checks: ${math500File} is absent`);

for (const name of ['test.jsonl', 'aime24_nofigures.jsonl']) {
  const file = path.join(shared, 'aime24', name);
  describe.skipIf(!existsSync(file))(`AIME24 rows (../shared/data/aime24/${name})`, () => {
    it('grades integer answers: right ones correct, off-by-one wrong', () => {
      const rows = readJsonl(file);
      expect(rows).toHaveLength(30);
      for (const row of rows) {
        const gold = row['answer'] as string | number;
        const n = aimeInteger(gold);
        expect(n, `answer ${gold}`).not.toBeNull();
        expect(isAimeEquivalent(extractMathAnswer(`<|im_start|>answer\nAnswer: \\boxed{${n}}`), gold)).toBe(true);
        expect(isAimeEquivalent(String(n).padStart(3, '0'), gold)).toBe(true);
        expect(isAimeEquivalent(String(n! + 1), gold)).toBe(false);
      }
    });
  });
  if (!existsSync(file)) console.warn(`skipping AIME24 grading checks: ${file} is absent`);
}
