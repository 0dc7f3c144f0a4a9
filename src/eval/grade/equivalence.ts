// Is a predicted answer the reference answer? Two stages:
//   1. fast (synchronous, string-only): Hendrycks' MATH normalisation and comparison (`isMathEquivalent`);
//   2. symbolic: both answers cut into parts (answer-parts.ts), each part parsed into an expression tree and
//      compared (symbolic.ts). Several parts are an unordered list, matched one to one.
// Stage 2 can be slow on a pathological answer: graders call it through bounded-equivalence.ts, which runs it
// in a worker with a deadline. `symbolicEquivalent` itself is synchronous and unbounded.
import { isMathEquivalent } from '../math-equivalence.ts';
import { answerParts, type AnswerPart } from './answer-parts.ts';
import { parseLatex, sameTree, type CompareOptions } from './symbolic.ts';

export const DEFAULT_COMPARE_OPTIONS: CompareOptions = { precision: 6 };

/** Stage 1: true when the normalised strings (or their simple values) already agree. */
export function fastEquivalent(predicted: string, reference: string): boolean {
  return isMathEquivalent(predicted, reference);
}

/** A decimal comma (`1000,99`, `2,74`) read as a decimal point, when the other side is one decimal number. */
function decimalCommaParts(parts: AnswerPart[], other: readonly AnswerPart[]): AnswerPart[] {
  const joined = parts.map((p) => p.value).join(',');
  if (parts.length === 2 && other.length === 1 && /^-?\d+,\d+$/.test(joined) && /^-?\d*\.\d+$/.test(other[0]!.value)) {
    const value = joined.replace(',', '.');
    return [{ value, written: value }];
  }
  return parts;
}

/** Two parts; an equation on one side is compared with the other part as written (labels kept). */
function partEquivalent(reference: AnswerPart, predicted: AnswerPart, options: CompareOptions): boolean {
  if (valueEquivalent(reference.value, predicted.value, options)) return true;
  const equation = (p: AnswerPart) => p.value !== p.written;
  if (equation(reference) === equation(predicted)) return false;
  return valueEquivalent(reference.written, predicted.written, options);
}

function valueEquivalent(reference: string, predicted: string, options: CompareOptions): boolean {
  if (reference === predicted) return true;
  const a = parseLatex(reference);
  const b = parseLatex(predicted);
  if (a === null || b === null) return reference.replace(/\s+/g, '').toLowerCase() === predicted.replace(/\s+/g, '').toLowerCase();
  try {
    return sameTree(a, b, options);
  } catch {
    return false;
  }
}

/** Stage 2: the answers as lists of parts, each part compared as an expression tree. */
export function symbolicEquivalent(predicted: string, reference: string, options: CompareOptions = DEFAULT_COMPARE_OPTIONS): boolean {
  let gold = answerParts(reference);
  let pred = answerParts(predicted);
  pred = decimalCommaParts(pred, gold);
  gold = decimalCommaParts(gold, pred);
  if (gold.length === 0 || pred.length === 0 || gold.length !== pred.length) return false;
  if (gold.length === 1) return partEquivalent(gold[0]!, pred[0]!, options);
  const unused = [...pred];
  for (const part of gold) {
    const k = unused.findIndex((p) => partEquivalent(part, p, options));
    if (k < 0) return false;
    unused.splice(k, 1);
  }
  return true;
}

/** Both stages, unbounded (tests and the worker use this; graders use the bounded form). */
export function answersEquivalent(predicted: string | null, reference: string, options: CompareOptions = DEFAULT_COMPARE_OPTIONS): boolean {
  if (predicted === null || predicted.trim() === '') return false;
  return fastEquivalent(predicted, reference) || symbolicEquivalent(predicted, reference, options);
}

/** Pairs that load the engine's lazily built parts (complex numbers, trigonometry, matrices, relations). */
const WARM_UP_PAIRS = [['x + 1', '1 + x'], ['e^{i\\pi}', '-1'], ['\\sec^2 y', '\\tan^2 y + 1'], ['\\frac{x}{7}+\\frac{2}{7}', '\\frac{x+2}{7}'],
  ['y - x = -1', 'x - y = 1'], ['\\begin{pmatrix}1\\\\2\\end{pmatrix}', '\\begin{pmatrix}0.5\\\\2\\end{pmatrix}'], ['[1, 2)', 'x \\leq 5'], ['\\pm 1', '1.5']];

/** Runs each kind of comparison once, so that the first real one does not pay for the engine's start. */
export function warmUpEquivalence(): void {
  for (const [a, b] of WARM_UP_PAIRS) symbolicEquivalent(a!, b!);
}
