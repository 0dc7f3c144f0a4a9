// Is a model's final answer the same as the reference answer? In the spirit of Hendrycks et al.'s MATH
// `is_equiv` (normalise both strings, then compare), with what later graders (s1's, Qwen2.5-Math's, Minerva's)
// added: numeric comparison with a tolerance, element-wise tuples and intervals, units and thousands separators.
// This is the grader's fast first path (strings only, synchronous); when it says no, src/eval/grade/ compares
// expression trees (grade/equivalence.ts). It must never say yes wrongly: no glued numbers, no tolerance on
// integers.
//
// What is compared, in order, after `normalizeMathAnswer` on both sides:
//   1. the normalised strings;
//   2. lists: `(a, b]`, `\{a, b\}`, `a, b`, `A \cup B`, `\begin{pmatrix}…` element by element (bracketed ones
//      in order with the same brackets; bare comma lists and sets in any order);
//   3. numbers: both sides evaluated (integers, decimals, \frac, \sqrt, \pi, + − × ÷ ^) and compared with a
//      relative tolerance of 1e-6 — exactly when both are integers written without decimals or roots
//      (`999999` ≢ `1000000`, `2^{40}` ≢ `1099511627777`), and not at all past 2^53 (left to the exact path).
// Anything symbolic beyond that (e.g. `2(x+1)` against `2x+2`) is left to the expression-tree path.
import { matchingBrace, splitTopLevel } from './grade/latex-text.ts';

/** Relative tolerance for computed values: 1.4142136 ≡ √2, 6366.1977 ≡ 20000/π, but 0.333 ≢ 1/3. */
export const NUMERIC_RELATIVE_TOLERANCE = 1e-6;

/** Trailing unit words dropped after a number (`5 cm`, `30 degrees`); from Minerva's list, plus common units. */
const UNIT_WORDS = [
  'square units', 'sq units', 'square feet', 'square inches', 'square meters', 'square centimeters', 'square cm', 'sq ft',
  'cubic units', 'cubic feet', 'cubic inches', 'cubic meters', 'cubic centimeters',
  'units', 'unit', 'degrees', 'degree', 'radians', 'cm', 'mm', 'km', 'm', 'meters', 'meter', 'inches', 'inch', 'in', 'feet', 'foot', 'ft',
  'yards', 'yd', 'miles', 'mile', 'mph', 'seconds', 'second', 'minutes', 'minute', 'hours', 'hour', 'days', 'day', 'weeks', 'years',
  'dollars', 'dollar', 'cents', 'cent', 'pounds', 'pound', 'lbs', 'ounces', 'grams', 'gm', 'g', 'kg', 'liters', 'people', 'students',
  'ways', 'points', 'digits', 'integers', 'numbers', 'handshakes', 'games', 'sq', 'p.m.', 'a.m.', 'pm', 'am',
];
const unitAlternatives = (words: string[]) => words.map((w) => w.replace(/[.]/g, '\\.').replace(/ /g, '\\s+')).join('|');
// Short units (`m`, `in`, `g`) only after a space, so `2m` stays an algebraic answer.
export const UNIT_PATTERN = new RegExp(
  String.raw`^(.*?[\d}.])(?:\s+(?:${unitAlternatives(UNIT_WORDS.filter((w) => w.length <= 2))})|\s*(?:${unitAlternatives(UNIT_WORDS.filter((w) => w.length > 2))}))(?:\s*\^\s*\{?[23]\}?)?\s*\.?$`,
  'i',
);

/** Text-mode wrappers whose argument is the answer itself: `\text{Evelyn}` → `Evelyn`. */
const TEXT_WRAPPERS = ['text', 'textbf', 'textit', 'textrm', 'mathrm', 'mathbf', 'mathit', 'mbox', 'operatorname'];

/**
 * The canonical form of an answer string: both sides of a comparison go through this, so it only has to
 * make equivalent writings equal, not produce pretty LaTeX.
 */
export function normalizeMathAnswer(answer: string): string {
  // One pass can expose a pattern for another (removing `$` in `^$\circ`), so passes run to a fixed point.
  let s = answer;
  for (let pass = 0; pass < 8; pass++) {
    const next = normalizeOnce(s);
    if (next === s) break;
    s = next;
  }
  // A list comes out as `a, b`: a bare `,` would read as a thousands separator when normalised again
  // (`1 000` → `1,000` → `1000`), and no other rule leaves a space.
  return s.replaceAll(LIST_SEPARATOR, ', ').trim();
}

/** A comma that separates answers for sure (`32, 349`, `6 and 8`): later passes must not read it as `32,349`. */
const LIST_SEPARATOR = '\uE001';

function normalizeOnce(answer: string): string {
  // `\\` (a matrix row break) is set aside so that no rule below reads its second backslash as a command.
  let s = answer.trim().replace(/[\uE000\uE001]/g, (c) => (c === LIST_SEPARATOR ? c : '')).replace(/\\\\/g, ROW_BREAK);
  s = s.replace(/\n/g, ' ').replace(/(\d),\\!(?=\d)/g, '$1,');
  // Spacing commands and display-only markup.
  s = s.replace(/~/g, ' ').replace(/\\[!,;:> ]/g, ' ').replace(/\\(?:displaystyle|textstyle|scriptstyle)\b/g, '');
  s = s.replace(/\\(?:d|t|c)frac(?![a-zA-Z])/g, '\\frac');
  s = s.replace(/\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])/g, '');
  // Dollars (currency and math delimiters) and percent.
  s = s.replace(/\\\$/g, '').replace(/\$/g, '');
  s = s.replace(/\\%/g, '').replace(/%/g, '');
  // Degrees.
  s = s.replace(/\^\s*\{\s*\\circ\s*\}/g, '').replace(/\^\s*\\circ/g, '').replace(/\\circ(?![a-zA-Z])/g, '').replace(/°/g, '');
  // Units: `\text{ cm}` (MATH writes a unit as a \text with a leading space), then a trailing \text/\mbox unit
  // after a number, then bare unit words.
  // A word joining two answers (`6 \text{ and } 8`) separates them; it must never be dropped and glue them.
  s = s.replace(/\\(?:text|mbox|textnormal)\{\s*(?:and|or|,)\s*\}/g, LIST_SEPARATOR).replace(/\\q?quad(?![a-zA-Z])/g, ' ');
  s = s.replace(/\\(?:text|mbox|mathrm|textrm|textnormal)\{\s+[^{}]*\}(?:\s*\^\s*\{?[23]\}?)?/g, '');
  s = s.replace(/^(.*?[\d}])\s*\\(?:text|mbox|mathrm|textrm)\{[a-zA-Z. ]*\}(?:\s*\^\s*\{?[23]\}?)?\s*$/, '$1');
  s = unwrapTextCommands(s).trim();
  for (let previous = ''; previous !== s;) {
    previous = s;
    s = s.replace(UNIT_PATTERN, '$1').trim();
  }
  // Trailing sentence punctuation.
  s = s.replace(/[\s.]+$/, '');
  // `x = 5`, `k=3`, `x \in [1, 2]`: a single variable named on the left is not part of the answer.
  const assigned = /^\s*([a-zA-Z]|\\(?:alpha|beta|gamma|delta|theta|lambda|mu|phi|psi|omega|rho|sigma|tau))(?:_\{?[a-zA-Z0-9]+\}?)?\s*(?:=|\\in(?![a-zA-Z]))\s*(.+)$/.exec(s);
  if (assigned && !assigned[2]!.includes('=')) s = assigned[2]!;
  s = s.replace(/\{,\}/g, ',');
  // `1,000` (whole answer with comma-separated groups of three, no spaces) is one thousand, not a list;
  // `32, 349` is a list. Digits that only a space separates are two answers: they are never glued together.
  if (/^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$/.test(s)) s = s.replace(/,/g, '');
  s = s.replace(/,\s+/g, LIST_SEPARATOR).replace(/(\d)\s+(?=\d)/g, `$1${LIST_SEPARATOR}`);
  s = s.replace(/\s+/g, '');
  // A backslash left bare before a separator (`\{,} 0`) would make `\,` (a space) of the `, ` written out.
  s = s.replace(/\\+(?=\uE001)/g, '');
  s = s.replace(/\\(?:cdot|times)/g, '*');
  s = fixSqrt(s);
  s = fixFracs(s);
  // `.5` → `0.5`.
  s = s.replace(/(?<![\d}.])\.(?=\d)/g, '0.');
  // Integer `a/b` → `\frac{a}{b}`.
  const slash = /^(-?)(\d+)\/(\d+)$/.exec(s);
  if (slash) s = `${slash[1]}\\frac{${slash[2]}}{${slash[3]}}`;
  // `(C)` → `C` (multiple-choice letters in MATH are written `\text{(C)}`).
  const choice = /^\(([A-Z])\)$/.exec(s);
  if (choice) s = choice[1]!;
  // Plain words (`\text{East}`) compare without case.
  if (/^[a-zA-Z]{2,}$/.test(s)) s = s.toLowerCase();
  return s.replaceAll(ROW_BREAK, '\\\\');
}

const ROW_BREAK = '\uE000';

/** `\text{abc}` → `abc` for every wrapper in TEXT_WRAPPERS, innermost first, braces balanced. */
function unwrapTextCommands(s: string): string {
  const pattern = new RegExp(String.raw`\\(?:${TEXT_WRAPPERS.join('|')})\s*\{`, 'g');
  for (let guard = 0; guard < 100; guard++) {
    pattern.lastIndex = 0;
    const match = pattern.exec(s);
    if (!match) return s;
    const open = match.index + match[0].length - 1;
    const close = matchingBrace(s, open);
    if (close < 0) return s;
    s = s.slice(0, match.index) + s.slice(open + 1, close) + s.slice(close + 1);
  }
  return s;
}

/** `\sqrt2` → `\sqrt{2}`, `\sqrt\pi` → `\sqrt{\pi}` (one token, as TeX reads it). */
function fixSqrt(s: string): string {
  return s.replace(/\\sqrt(?![a-zA-Z{[])(\\[a-zA-Z]+|[^})\],])/g, (_, arg: string) => `\\sqrt{${arg}}`);
}

/** `\frac12` → `\frac{1}{2}`, `\frac1{72}` → `\frac{1}{72}`, `\frac{3}2` → `\frac{3}{2}` (TeX's one-token arguments). */
function fixFracs(s: string): string {
  let out = '';
  let i = 0;
  while (i < s.length) {
    if (!s.startsWith('\\frac', i) || /[a-zA-Z]/.test(s[i + 5] ?? '')) {
      out += s[i++];
      continue;
    }
    i += 5;
    const args: string[] = [];
    for (let k = 0; k < 2 && i < s.length && !'})]'.includes(s[i]!); k++) {
      if (s[i] === '{') {
        const close = matchingBrace(s, i);
        if (close < 0) break;
        args.push(fixFracs(s.slice(i + 1, close)));
        i = close + 1;
      } else if (s[i] === '\\') {
        const command = /^\\[a-zA-Z]+/.exec(s.slice(i))?.[0] ?? s.slice(i, i + 2);
        args.push(command);
        i += command.length;
      } else {
        args.push(s[i]!);
        i++;
      }
    }
    out += `\\frac${args.map((a) => `{${a}}`).join('')}`;
  }
  return out;
}

// ---- numbers ------------------------------------------------------------------------------------

/**
 * The value of a normalised answer that is a number written with digits, \frac, \sqrt, \pi, + − * / ^ and
 * parentheses (implicit products as in `2\sqrt{3}` or `3\pi`; `1\frac{4}{5}` is the mixed number 1⅘); null
 * for anything else (variables, `i`, lists, words).
 */
export function evaluateNumber(normalized: string): number | null {
  const parser = new NumberParser(normalized);
  try {
    const value = parser.expression();
    return parser.atEnd() && Number.isFinite(value) ? value : null;
  } catch {
    return null;
  }
}

class NumberParser {
  private i = 0;
  constructor(private readonly s: string) {}

  atEnd(): boolean {
    return this.i === this.s.length;
  }

  expression(): number {
    let value = this.term();
    for (;;) {
      const c = this.s[this.i];
      if (c === '+') {
        this.i++;
        value += this.term();
      } else if (c === '-') {
        this.i++;
        value -= this.term();
      } else return value;
    }
  }

  private term(): number {
    let value = this.unary();
    for (;;) {
      const c = this.s[this.i];
      if (c === '*') {
        this.i++;
        value *= this.unary();
      } else if (c === '/' || this.s.startsWith('\\div', this.i)) {
        this.i += c === '/' ? 1 : 4;
        value /= this.unary();
      } else if (this.startsAtom()) {
        value *= this.power();
      } else return value;
    }
  }

  private unary(): number {
    if (this.s[this.i] === '-') {
      this.i++;
      return -this.unary();
    }
    if (this.s[this.i] === '+') {
      this.i++;
      return this.unary();
    }
    return this.power();
  }

  private power(): number {
    const base = this.atom();
    if (this.s[this.i] !== '^') return base;
    this.i++;
    const exponent = this.s[this.i] === '{' ? this.group() : this.s[this.i] === '-' ? (this.i++, -this.atom()) : this.atom();
    return base ** exponent;
  }

  private startsAtom(): boolean {
    const rest = this.s.slice(this.i);
    return /^(?:\d|\.\d|\(|\{|\\pi(?![a-zA-Z])|\\frac|\\sqrt)/.test(rest);
  }

  private atom(): number {
    const rest = this.s.slice(this.i);
    const number = /^(?:\d+(?:\.\d*)?|\.\d+)/.exec(rest);
    if (number) {
      this.i += number[0].length;
      // A mixed number: an integer directly followed by \frac{integer}{integer}.
      const mixed = /^\\frac\{(\d+)\}\{(\d+)\}/.exec(this.s.slice(this.i));
      if (mixed && /^\d+$/.test(number[0])) {
        this.i += mixed[0].length;
        return Number(number[0]) + Number(mixed[1]) / Number(mixed[2]);
      }
      return Number(number[0]);
    }
    if (rest.startsWith('\\pi') && !/^\\pi[a-zA-Z]/.test(rest)) {
      this.i += 3;
      return Math.PI;
    }
    if (rest.startsWith('\\frac')) {
      this.i += 5;
      const numerator = this.group();
      return numerator / this.group();
    }
    if (rest.startsWith('\\sqrt')) {
      this.i += 5;
      let index = 2;
      if (this.s[this.i] === '[') {
        const close = this.s.indexOf(']', this.i);
        if (close < 0) throw new Error('unclosed root index');
        index = evaluateOrThrow(this.s.slice(this.i + 1, close));
        this.i = close + 1;
      }
      const radicand = this.group();
      return index === 2 ? Math.sqrt(radicand) : Math.sign(radicand) * Math.abs(radicand) ** (1 / index);
    }
    if (rest[0] === '(') {
      this.i++;
      const value = this.expression();
      if (this.s[this.i] !== ')') throw new Error('expected )');
      this.i++;
      return value;
    }
    if (rest[0] === '{') return this.group();
    throw new Error(`not a number at ${this.i}`);
  }

  private group(): number {
    if (this.s[this.i] !== '{') throw new Error('expected {');
    const close = matchingBrace(this.s, this.i);
    if (close < 0) throw new Error('unclosed {');
    const value = evaluateOrThrow(this.s.slice(this.i + 1, close));
    this.i = close + 1;
    return value;
  }
}

function evaluateOrThrow(text: string): number {
  const value = evaluateNumber(text);
  if (value === null) throw new Error(`not a number: ${text}`);
  return value;
}

function numbersClose(a: number, b: number): boolean {
  if (a === b) return true;
  return Math.abs(a - b) <= NUMERIC_RELATIVE_TOLERANCE * Math.max(Math.abs(a), Math.abs(b));
}

// ---- lists, intervals, matrices -------------------------------------------------------------------

interface AnswerList {
  open: string;
  close: string;
  items: string[];
  ordered: boolean;
}

/** A normalised answer seen as a list of answers, or null when it is a single one. */
function asList(s: string): AnswerList | null {
  const matrix = /^\\begin\{([pbvBV]?matrix|array)\}(?:\{[^}]*\})?(.*)\\end\{\1\}$/.exec(s);
  if (matrix) {
    const rows = matrix[2]!.split('\\\\').filter((row) => row !== '');
    return { open: 'matrix', close: String(rows.length), items: rows.flatMap((row) => row.split('&')), ordered: true };
  }
  const unions = splitTopLevel(s, ['\\cup']);
  if (unions.length > 1) return { open: '', close: '\\cup', items: unions, ordered: true };
  const brackets = /^(\\\{|[([])(.*)(\\\}|[)\]])$/.exec(s);
  if (brackets) {
    const [, open, inner, close] = brackets as unknown as [string, string, string, string];
    // `(a+b)(c+d)` is a product, not a pair: the outer brackets must enclose everything.
    if (open !== '\\{' && matchingBracket(s) !== s.length - 1) return null;
    const items = listItems(inner);
    if (items.length < 2 && open !== '\\{') return null;
    return { open, close, items, ordered: open !== '\\{' };
  }
  const items = listItems(s);
  return items.length > 1 ? { open: '', close: '', items, ordered: false } : null;
}

/** The comma-separated items of a normalised list (`a, b` or `a,b`). */
function listItems(s: string): string[] {
  return splitTopLevel(s, [',']).map((item) => item.trim());
}

/** Index of the bracket closing s[0] (any of ( [ ), or -1. */
function matchingBracket(s: string): number {
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') {
      depth--;
      if (depth === 0) return i;
    }
  }
  return -1;
}

function listsEquivalent(a: AnswerList, b: AnswerList): boolean {
  if (a.open !== b.open || a.close !== b.close || a.items.length !== b.items.length) return false;
  if (a.ordered) return a.items.every((item, k) => normalizedEquivalent(item, b.items[k]!));
  const unused = [...b.items];
  for (const item of a.items) {
    const k = unused.findIndex((other) => normalizedEquivalent(item, other));
    if (k < 0) return false;
    unused.splice(k, 1);
  }
  return true;
}

function normalizedEquivalent(a: string, b: string): boolean {
  if (a === b) return true;
  const listA = asList(a);
  const listB = asList(b);
  if (listA || listB) return listA !== null && listB !== null && listsEquivalent(listA, listB);
  const x = evaluateNumber(a);
  const y = evaluateNumber(b);
  if (x === null || y === null) return false;
  // Two written-out numbers are equal or not (999999 ≢ 1000000); so are two exact integers (2^{40} ≢
  // 1099511627777), which past 2^53 floats cannot tell apart. The tolerance is for computed values.
  if (NUMBER_LITERAL.test(a) && NUMBER_LITERAL.test(b)) return x === y && Math.abs(x) <= Number.MAX_SAFE_INTEGER;
  if (Number.isInteger(x) && Number.isInteger(y) && !/[.]|\\sqrt|\\pi/.test(a + b)) return x === y && Math.abs(x) <= Number.MAX_SAFE_INTEGER;
  return numbersClose(x, y);
}

const NUMBER_LITERAL = /^[-+]?(?:\d+(?:\.\d*)?|\.\d+)$/;

/** MATH-style equivalence of a predicted answer and the reference one; a missing prediction is wrong. */
export function isMathEquivalent(predicted: string | null | undefined, reference: string): boolean {
  if (predicted === null || predicted === undefined || predicted.trim() === '') return false;
  const a = normalizeMathAnswer(predicted);
  const b = normalizeMathAnswer(reference);
  if (a === '' || b === '') return false;
  // Element-wise comparison re-normalises nothing: items of normalised strings are already normal, except
  // that an item may still carry a leading `x=` in `x=1,y=2`; that is compared as written.
  return normalizedEquivalent(a, b);
}

// ---- AIME ---------------------------------------------------------------------------------------

/** The integer an AIME answer states (`033` → 33, `\text{204}` → 204), or null. */
export function aimeInteger(answer: string | number): number | null {
  if (typeof answer === 'number') return Number.isInteger(answer) ? answer : null;
  const s = normalizeMathAnswer(answer);
  return /^\+?\d+$/.test(s) ? Number(s) : null;
}

/** AIME answers are integers 0–999: exact integer match, leading zeros ignored. */
export function isAimeEquivalent(predicted: string | null | undefined, reference: string | number): boolean {
  if (predicted === null || predicted === undefined) return false;
  const a = aimeInteger(predicted);
  const b = aimeInteger(reference);
  return a !== null && b !== null && a === b;
}
