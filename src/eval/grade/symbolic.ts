// Two answer parts compared as expression trees. Each is parsed by @cortex-js/compute-engine into MathJSON
// (`["Tuple", 3, 2]`, `["Interval", 1, ["Open", 2]]`, `["LessEqual", "x", 5]`) and the trees are compared:
//   containers      Tuple/List element-wise, Set in any order, Interval with its open/closed ends, Matrix by
//                   rows, Union by members; `(a, b)` stands for the open interval when the other side is one;
//   relations       `a = b` ≡ `c = d` when a − b ≡ ±(c − d); inequalities side by side after turning `>` into
//                   `<` (so `5 ≥ x` ≡ `x ≤ 5`); a reference `a < x < b` also matches the interval `(a, b)`;
//   text            `\text{…}` compared without case or spaces;
//   values          with no unknowns, numerically: exact forms to 1e-9 relative, and when either side is written
//                   with a decimal point, rounded to `precision` places (Math-Verify's float_rounding, 6) or
//                   within 10^-precision relative; with unknowns, the same unknowns on both sides and equal
//                   values at fixed sample points (or, where they cannot be evaluated, a difference that
//                   simplifies to 0).
// This runs in the grading worker (see bounded-equivalence.ts), because simplification can take unbounded time.
import { ComputeEngine } from '@cortex-js/compute-engine';

type Json = unknown;

let engine: ComputeEngine | undefined;
function ce(): ComputeEngine {
  engine ??= new ComputeEngine();
  return engine;
}

export interface CompareOptions {
  /** Decimal places kept when a side is written as a decimal (Math-Verify's float_rounding). */
  precision: number;
}

/** The MathJSON of a LaTeX answer part, or null when the parser reports an error in it. */
export function parseLatex(latex: string): Json | null {
  const json = ce().parse(latex).json;
  return JSON.stringify(json).includes('"Error"') ? null : json;
}

const head = (j: Json): string | null => (Array.isArray(j) && typeof j[0] === 'string' ? j[0] : null);
const args = (j: Json): Json[] => (Array.isArray(j) ? j.slice(1) : []);
const isText = (j: Json): j is string => typeof j === 'string' && j.length >= 2 && j.startsWith("'") && j.endsWith("'");

const ORDERED = new Set(['Tuple', 'List', 'Delimiter', 'Pair', 'Triple', 'Sequence']);
const FLIPPED: Record<string, string> = { Greater: 'Less', GreaterEqual: 'LessEqual' };
const RELATIONS = new Set(['Less', 'LessEqual', 'NotEqual', 'Approx']);

/** `[a, b]` as an interval: `["Interval", a, ["Open", b]]` → ends with their open flags. */
function intervalEnds(j: Json): Array<{ value: Json; open: boolean }> | null {
  if (head(j) === 'Interval') return args(j).map((end) => (head(end) === 'Open' ? { value: args(end)[0], open: true } : { value: end, open: false }));
  if (head(j) === 'Tuple' && args(j).length === 2) return args(j).map((value) => ({ value, open: true }));
  if (head(j) === 'List' && args(j).length === 2) return args(j).map((value) => ({ value, open: false }));
  return null;
}

/** A reference `a < x < b` / `a ≤ x ≤ b` as interval ends, when its middle is a lone unknown. */
function chainAsInterval(j: Json): Array<{ value: Json; open: boolean }> | null {
  const h = head(j);
  if ((h !== 'Less' && h !== 'LessEqual') || args(j).length !== 3 || typeof args(j)[1] === 'number') return null;
  const [low, , high] = args(j);
  return [{ value: low, open: h === 'Less' }, { value: high, open: h === 'Less' }];
}

function flip(j: Json): Json {
  const h = head(j);
  if (h && FLIPPED[h]) return [FLIPPED[h], ...args(j).reverse()];
  return j;
}

/** Is the predicted tree `b` the reference tree `a`? */
export function sameTree(a: Json, b: Json, options: CompareOptions): boolean {
  a = flip(a);
  b = flip(b);
  if (JSON.stringify(a) === JSON.stringify(b)) return true;
  const ha = head(a);
  const hb = head(b);
  if (isText(a) || isText(b)) return isText(a) && isText(b) && a.toLowerCase().replace(/\s+/g, '') === b.toLowerCase().replace(/\s+/g, '');
  const chainA = chainAsInterval(a);
  const endsA = intervalEnds(a) ?? chainA;
  const endsB = intervalEnds(b);
  if ((ha === 'Interval' || hb === 'Interval' || chainA) && endsA && endsB) {
    return endsA.length === endsB.length && endsA.every((end, k) => end.open === endsB[k]!.open && sameTree(end.value, endsB[k]!.value, options));
  }
  if (ha === 'Matrix' || hb === 'Matrix') {
    // `A + B` or `2A` against a matrix: evaluated first.
    const rows = (j: Json) => (head(j) === 'Matrix' ? args(j)[0] : j);
    if (ha !== hb) return sameTree(rows(evaluated(a)), rows(evaluated(b)), options);
    return sameTree(rows(a), rows(b), options);
  }
  // `(1, 2)` is not `[1, 2]`: brackets matter.
  if ((ha === 'Tuple' && hb === 'List') || (ha === 'List' && hb === 'Tuple')) return false;
  if ((ha && ORDERED.has(ha)) || (hb && ORDERED.has(hb))) {
    return ha !== null && hb !== null && ORDERED.has(ha) && ORDERED.has(hb) && sameOrdered(args(a), args(b), options);
  }
  if (ha === 'Set' || hb === 'Set' || ha === 'Union' || hb === 'Union') return ha === hb && sameUnordered(args(a), args(b), options);
  if (ha === 'Equal' || hb === 'Equal') return ha === hb && sameEquation(a, b, options);
  if ((ha && RELATIONS.has(ha)) || (hb && RELATIONS.has(hb))) return ha === hb && sameRelation(a, b, options);
  if (ha === 'Colon' || hb === 'Colon') return ha === hb && sameOrdered(args(a), args(b), options);
  return sameValue(a, b, options);
}

function sameOrdered(a: readonly Json[], b: readonly Json[], options: CompareOptions): boolean {
  return a.length === b.length && a.every((x, k) => sameTree(x, b[k], options));
}

function sameUnordered(a: readonly Json[], b: readonly Json[], options: CompareOptions): boolean {
  if (a.length !== b.length) return false;
  const unused = [...b];
  for (const x of a) {
    const k = unused.findIndex((y) => sameTree(x, y, options));
    if (k < 0) return false;
    unused.splice(k, 1);
  }
  return true;
}

function evaluated(j: Json): Json {
  return ce().box(j as never).evaluate().json;
}

/** `a < b` against `c < d` (after flipping `>`): the same sides, or a − b ≡ c − d (`-x > -1` ≡ `x < 1`). */
function sameRelation(a: Json, b: Json, options: CompareOptions): boolean {
  if (sameOrdered(args(a), args(b), options)) return true;
  if (args(a).length !== 2 || args(b).length !== 2) return false;
  return sameValue(['Subtract', ...args(a)], ['Subtract', ...args(b)], options);
}

/**
 * `l = r` against `l' = r'`: the same sides either way round, or the same solutions — l − r a constant nonzero
 * multiple of l' − r' (an equation × −1, or `2x + 4y - 3 = 0` against `y = -x/2 + 3/4`).
 */
function sameEquation(a: Json, b: Json, options: CompareOptions): boolean {
  const [la, ra] = args(a);
  const [lb, rb] = args(b);
  if (args(a).length !== 2 || args(b).length !== 2) return sameOrdered(args(a), args(b), options);
  if (sameTree(la, lb, options) && sameTree(ra, rb, options)) return true;
  if (sameTree(la, rb, options) && sameTree(ra, lb, options)) return true;
  return proportional(['Subtract', la, ra], ['Subtract', lb, rb]);
}

/** Is `a` a constant nonzero multiple of `b` (same unknowns, one ratio at every sample point)? */
function proportional(a: Json, b: Json): boolean {
  const names = unknowns(a);
  if (names.length === 0 || names.join() !== unknowns(b).join()) return false;
  let ratio: number | null = null;
  let compared = 0;
  for (let k = 0; k < SAMPLE_POINTS.length; k++) {
    const bindings = pointBindings(names, k);
    const x = complexValue(a, bindings);
    const y = complexValue(b, bindings);
    if (x === null || y === null || Math.abs(y.re) < 1e-12 || x.im !== 0 || y.im !== 0) continue;
    const r = x.re / y.re;
    if (ratio === null) ratio = r;
    else if (!close(r, ratio, false, 0)) return false;
    compared++;
  }
  return ratio !== null && ratio !== 0 && compared >= 3;
}

function pointBindings(names: readonly string[], k: number): Record<string, number> {
  return Object.fromEntries(names.map((name, i) => [name, SAMPLE_POINTS[(k + i) % SAMPLE_POINTS.length]! + i * 0.1]));
}

// ---- values -----------------------------------------------------------------------------------------

/** Fixed sample points (a seeded sequence, so verdicts are reproducible), away from 0, 1 and poles of tan. */
const SAMPLE_POINTS = [0.5372, 1.3417, 2.2851, 0.8123, 1.7701];

function complexValue(j: Json, bindings?: Record<string, number>): { re: number; im: number } | null {
  let expr = ce().box(j as never);
  if (bindings) expr = expr.subs(Object.fromEntries(Object.entries(bindings).map(([k, v]) => [k, ce().number(v)])));
  const value = expr.N();
  const re = Number(value.re);
  const im = Number(value.im ?? 0);
  return Number.isFinite(re) && Number.isFinite(im) ? { re, im } : null;
}

const hasDecimal = (j: Json): boolean => JSON.stringify(j).match(/(?<![\w"])-?\d+\.\d+|"num":"-?\d+\.\d+/) !== null;

function close(x: number, y: number, approximate: boolean, precision: number): boolean {
  const scale = Math.max(1, Math.abs(x), Math.abs(y));
  if (Math.abs(x - y) <= 1e-9 * scale) return true;
  if (!approximate) return false;
  const factor = 10 ** precision;
  return Math.round(x * factor) === Math.round(y * factor) || Math.abs(x - y) <= 10 ** -precision * scale;
}

function unknowns(j: Json): string[] {
  return [...(ce().box(j as never).unknowns ?? [])].map(String).sort();
}

/** True/false when a − b evaluates exactly to an integer or rational; null when it does not (surds, π). */
function exactDifference(a: Json, b: Json): boolean | null {
  const difference = ce().box(['Subtract', a, b] as never).evaluate().json;
  if (typeof difference === 'number') return difference === 0;
  if (head(difference) === 'Rational' && args(difference).every((x) => typeof x === 'number')) return false;
  if (typeof difference === 'object' && difference !== null && 'num' in difference && /^-?\d+$/.test(String((difference as { num: unknown }).num))) return /^-?0+$/.test(String((difference as { num: unknown }).num));
  return null;
}

/** Equal values: numerically when there are no unknowns, else by simplification or at random points. */
export function sameValue(a: Json, b: Json, options: CompareOptions): boolean {
  const approximate = hasDecimal(a) || hasDecimal(b);
  const ua = unknowns(a);
  const ub = unknowns(b);
  if (ua.join() !== ub.join()) return false;
  if (ua.length === 0) {
    // Exact forms whose difference is an exact number: equal only when it is 0 (11111111100 ≢ 11111111101,
    // which a relative tolerance would accept).
    if (!approximate) {
      const exact = exactDifference(a, b);
      if (exact !== null) return exact;
    }
    const x = complexValue(a);
    const y = complexValue(b);
    return x !== null && y !== null && close(x.re, y.re, approximate, options.precision) && close(x.im, y.im, approximate, options.precision);
  }
  // Sample points first: they decide almost every pair, and simplification is the slow step.
  let compared = 0;
  for (let k = 0; k < SAMPLE_POINTS.length; k++) {
    const bindings = pointBindings(ua, k);
    const x = complexValue(a, bindings);
    const y = complexValue(b, bindings);
    if (x === null || y === null) continue;
    if (!close(x.re, y.re, approximate, options.precision) || !close(x.im, y.im, approximate, options.precision)) return false;
    compared++;
  }
  return compared >= 2 || ce().box(['Subtract', a, b] as never).simplify().is(0);
}
