// An answer's LaTeX reduced to the values it states, before parsing: delimiters, markup, units, text,
// degrees, percent and currency removed; then cut into parts (`a, b`, `a \text{ and } b`, `a; b`), each part
// without its label (`x = 5`, `(p,q) = (3,2)`, `f(x) = 1`, `AB = 4`, `x \approx 11`, `x \in [1, 2]`, the last
// side of a chain `a = b = c`) and with `\pm` written out as its two values.
// Removing text never glues numbers: a removed word becomes a space, and `6 \text{ and } 8` is two parts.
import { UNIT_PATTERN } from '../math-equivalence.ts';
import { matchingBrace, splitTopLevel } from './latex-text.ts';

const TEXT_COMMANDS = /\\(?:text|textnormal|textrm|textbf|textit|mbox|mathrm|mathbf|mathit|operatorname)\s*\{/g;

/** `\text{…}` groups: kept as the answer when the whole answer is text, else removed (units, words). */
function dropTextGroups(s: string): string {
  TEXT_COMMANDS.lastIndex = 0;
  const whole = /^\\(?:text|textnormal|textrm|textbf|textit|mbox|mathrm)\s*\{/.exec(s);
  if (whole && matchingBrace(s, whole[0].length - 1) === s.length - 1) return `\\text{${s.slice(whole[0].length, -1).trim()}}`;
  let out = s;
  for (let guard = 0; guard < 50; guard++) {
    TEXT_COMMANDS.lastIndex = 0;
    const match = TEXT_COMMANDS.exec(out);
    if (!match) break;
    const open = match.index + match[0].length - 1;
    const close = matchingBrace(out, open);
    if (close < 0) break;
    const inner = out.slice(open + 1, close);
    // `\mathrm{e}`, `\text{13}`, `\mathbf{v}`: a symbol or number in text style is kept; words go.
    const keep = /^\s*(?:[a-zA-Z]|[-\d.,\s]+|\\[a-zA-Z]+)\s*$/.test(inner) && !/^\s*(?:and|or)\s*$/.test(inner);
    out = `${out.slice(0, match.index)}${keep ? inner : ' '}${out.slice(close + 1)}`;
  }
  return out;
}

const ROW_BREAK = '\uE000';

/** The LaTeX of an answer with everything that is not its value removed. */
export function cleanAnswer(answer: string): string {
  let s = answer.trim().replace(/(?<!\\)\\\\(?=[a-zA-Z])/g, '\\'); // `\\frac` from a doubly escaped string
  s = s.replace(/^\$+|\$+$/g, '').replace(/^\\\[|\\\]$/g, '').replace(/^\\\(|\\\)$/g, '').trim();
  const boxed = /^\\(?:boxed|fbox)\s*\{/.exec(s);
  if (boxed && matchingBrace(s, boxed[0].length - 1) === s.length - 1) s = s.slice(boxed[0].length, -1);
  s = s.replace(/\n/g, ' ').replace(/(\d),\\!\s*(?=\d{3})/g, '$1,').replace(/(\d)\s*\{\s*,\s*\}\s*(?=\d)/g, '$1,');
  s = s.replace(/\\\\/g, ROW_BREAK); // a matrix row break, kept apart from `\ ` (a space)
  s = s.replace(/\\[!]/g, '').replace(/\\[,;:> ]/g, ' ').replace(/~/g, ' ');
  s = s.replace(/\\q?quad(?![a-zA-Z])/g, ','); // `3 \quad 4` is two answers, never 34
  s = s.replace(/\\(?:displaystyle|textstyle|scriptstyle)(?![a-zA-Z])/g, '').replace(/\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])\.?/g, '');
  s = s.replace(/\\[dtc]frac(?![a-zA-Z])/g, '\\frac');
  // Matrices in any bracket style are one matrix: `\left[\begin{array}{cc}…\end{array}\right]`, `bmatrix`.
  s = s.replace(/\[?\s*\\begin\{array\}\{[^}]*\}([\s\S]*?)\\end\{array\}\s*\]?/g, '\\begin{pmatrix}$1\\end{pmatrix}')
    .replace(/\\(begin|end)\{[bB]matrix\}/g, '\\$1{pmatrix}');
  s = s.replace(/^\(\s*(\\begin\{pmatrix\}[\s\S]*\\end\{pmatrix\})\s*\)$/, '$1');
  // Words that join answers.
  s = s.replace(/\\(?:text|textnormal|mbox)\{\s*(?:and|or)\s*\}/g, ',').replace(/(?<![a-zA-Z\\])(?:and|or)(?![a-zA-Z])/g, ',');
  // Degrees, percent, currency.
  s = s.replace(/\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ(?![a-zA-Z])|°|\\degree(?![a-zA-Z])/g, ' ');
  s = s.replace(/\\%|%|(?<![a-zA-Z])(?:percentage|percent|pct)(?![a-zA-Z])/gi, ' ');
  s = s.replace(/\\\$|\$|€|£|¥|\\euro(?![a-zA-Z])|\\pounds(?![a-zA-Z])/g, ' ');
  s = s.replace(/²/g, '^2').replace(/³/g, '^3');
  s = dropTextGroups(s);
  for (let previous = ''; previous !== s;) {
    previous = s;
    s = s.trim().replace(UNIT_PATTERN, '$1').trim();
  }
  s = s.replace(/[\s.]+$/, '').replace(/\s+/g, ' ').trim();
  s = s.replace(new RegExp(`(?:${ROW_BREAK}\\s*)+(\\\\end\\{pmatrix\\})`, 'g'), '$1').replaceAll(ROW_BREAK, '\\\\');
  // Thousands separators: `7,425,000`, `1 000` (only a whole number written that way).
  if (/^[-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$/.test(s) || /^[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?$/.test(s)) s = s.replace(/[, ]/g, '');
  return s;
}

/**
 * A label: the named left side of `name = value` — a name, `f(x)`, `(p,q)`, `AB`, `|AB|`, `A:B`,
 * `\frac{NO}{BO}`, `a_{37}` — anything without digits (subscripts aside) or arithmetic, so `x + y = 1` and
 * `x^2 = 4` stay equations.
 */
function isLabel(side: string): boolean {
  const bare = side.replace(/_\{[^{}]*\}|_[a-zA-Z0-9]/g, '').trim();
  return bare !== '' && !/[\d+\-^*]|\\(?:cdot|times|sqrt)(?![a-zA-Z])/.test(bare) && /[a-zA-Z]/.test(bare);
}

/** Arithmetic on numbers only (`5+5+1`, `\frac{1}{2}`). */
const isNumeric = (side: string): boolean => !/[a-zA-Z]/.test(side.replace(/\\[a-zA-Z]+/g, '')) && /\d/.test(side);

/**
 * One part without its label and without the working before its result: `x = 2 + 3 = 5` → `5`,
 * `x = \frac{1}{3} \approx 0.33` → `\frac{1}{3}` (the exact value before an approximation), `x \approx 11` → `11`.
 */
export function withoutLabel(part: string): string {
  const approx = splitTopLevel(part, ['\\approx']);
  if (approx.length > 1) part = splitTopLevel(approx[0]!, ['=']).length > 1 ? approx[0]! : approx.at(-1)!;
  const sides = splitTopLevel(part, ['=', '\\in']);
  if (sides.length < 2) return part.trim();
  const last = sides.at(-1)!.trim();
  const isIn = /\\in(?![a-zA-Z])/.test(part);
  // `5 + 5 + 1 = 11` is working and its result; `7 = 11a + c` is an equation.
  if (sides.length > 2 || isIn || isLabel(sides[0]!) || (isNumeric(sides[0]!) && isNumeric(last))) return last;
  return part.trim();
}

/** `a \pm b` written out as `a + b` and `a - b` (each `\pm` doubles the list; `\mp` is its mirror). */
export function expandPlusMinus(part: string): string[] {
  const at = /\\(pm|mp)(?![a-zA-Z])/.exec(part);
  if (!at) return [part];
  const [first, second] = at[1] === 'pm' ? ['+', '-'] : ['-', '+'];
  const before = part.slice(0, at.index);
  const after = part.slice(at.index + at[0].length);
  return [...expandPlusMinus(`${before}${first}${after}`), ...expandPlusMinus(`${before}${second}${after}`)]
    .map((p) => p.replace(/^\s*\+/, '').trim());
}

/** The bare braces of a set written `{1, 2}` or `\{1, 2\}` around the whole answer. */
function setBody(s: string): string | null {
  if (s.startsWith('\\{') && s.endsWith('\\}')) return s.slice(2, -2);
  if (s.startsWith('{') && matchingBrace(s, 0) === s.length - 1) return s.slice(1, -1);
  return null;
}

export interface AnswerPart {
  /** The value, label and working removed. */
  value: string;
  /** The part as written (an equation `y = 2x + 3` is compared as one when the other side is an equation). */
  written: string;
}

/** The values an answer states; more than one means an unordered list (as the field grades). */
export function answerParts(answer: string): AnswerPart[] {
  let s = cleanAnswer(answer);
  const body = setBody(s);
  const isSet = body !== null && body.includes(',');
  if (body !== null && (isSet || s.startsWith('{'))) s = body;
  s = s.replace(/;/g, ',');
  const parts = splitTopLevel(s, [',']).map((p) => p.trim()).filter((p) => p !== '');
  // `x = 1, 2, 3` labels the list once; `a_3 = 2, a_{37} = 19` labels each part.
  const all = parts.flatMap((written) => expandPlusMinus(withoutLabel(written)).map((value) => ({ value, written })));
  // A list is a set: a value written twice counts once.
  const seen = new Set<string>();
  return all.filter((p) => {
    const key = p.value.replace(/\s+/g, '');
    if (p.value === '' || seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
