// The final answer of a MATH / AIME output, read the way the field's graders (Math-Verify, s1, Qwen2.5-Math)
// read it, in this order of trust:
//   1. a closing statement (`The final answer is $X$`, `Answer: X`) that comes after the last box;
//   2. the last box run: `\boxed{a}, \boxed{b}` joined as `a, b` (also the last `parts` boxes when the
//      reference has several parts);
//   3. a closing statement before the boxes' end (none after them means the box is the answer);
//   4. the last math span (`$…$`, `\[…\]`);
//   5. with an s1 answer marker, the answer section's first line; else the last number in the text.
// An early box never beats a later closing statement: models box a guess, then correct themselves.
import { answerSection } from './answer-section.ts';
import { boxedGroups } from './latex-text.ts';
import { mathSpans } from './math-spans.ts';

export interface ExtractOptions {
  /** How many comma-separated parts the reference answer has; boxes are joined up to this many. */
  parts?: number;
}

const CLOSING = /(?:final\s+answer\s+is|answer\s+is|final\s+answer\s*:|answer\s*:|answer\s*\*\*\s*:)\s*(?:\*\*)?\s*:?/gi;

interface Statement {
  answer: string;
  start: number;
}

/** What the last closing statement states: its first math span or box, else its prose up to the sentence end. */
export function lastClosingStatement(text: string): Statement | null {
  const matches = [...text.matchAll(CLOSING)];
  for (let k = matches.length - 1; k >= 0; k--) {
    const match = matches[k]!;
    const after = match.index + match[0].length;
    const answer = statedAnswer(text.slice(after));
    if (answer !== null) return { answer, start: match.index };
  }
  return null;
}

function statedAnswer(rest: string): string | null {
  const trimmed = rest.replace(/^[\s*]+/, '');
  const box = boxedGroups(trimmed)[0];
  const span = mathSpans(trimmed)[0];
  const firstSentence = trimmed.split(/\n\s*\n/)[0]!;
  // A span or box within the statement's own paragraph is the answer (`is $100$. I hope it is correct.`).
  if (box && box.start < firstSentence.length) return box.content.trim();
  if (span && span.start < firstSentence.length && /^[^.!?]*$/.test(trimmed.slice(0, span.start).replace(/\d\.\d/g, ''))) {
    // `The largest $n$ is 34.`: the span names the unknown, the value follows.
    const value = /^\s*(?:is|=|equals)\s+(-?\d[\d,]*(?:\.\d+)?)(?![\d,])/.exec(trimmed.slice(span.end));
    return value ? value[1]! : span.content;
  }
  const line = trimmed.split('\n').map((l) => l.trim()).find((l) => l !== '');
  if (line === undefined) return null;
  const sentence = line.replace(/\.(?=\s|$).*$/, '').replace(/\*\*/g, '').replace(/[\s.]+$/, '').trim();
  // `Jane started growing Sphere 3 hours ago`: prose stating one number states that number.
  const numbers = sentence.match(/-?\d[\d,]*(?:\.\d+)?(?:\/\d+)?/g) ?? [];
  if (numbers.length === 1 && (sentence.match(/[a-zA-Z]{3,}/g) ?? []).length >= 2 && !/[\\^_{}=]/.test(sentence)) return numbers[0]!;
  return sentence === '' ? null : sentence;
}

/** Separators allowed between the boxes of one multi-part answer. */
const BOX_GAP = /^(?:[\s,;$]|\\\(|\\\)|\\quad|\\qquad|\\,|and|or|\\text\{\s*(?:and|or)\s*\})*$/;
/** A wider gap allowed when the reference says how many parts to expect: `\\boxed{a} for part (a) and \\boxed{b}`. */
const PART_GAP = /^[^.\n]{0,60}$/;

/** The last run of boxes (or math spans) joined as one answer `a, b`; repeated contents count once. */
function lastRun(text: string, groups: ReadonlyArray<{ content: string; start: number; end: number }>, parts: number): string {
  let first = groups.length - 1;
  const gap = (k: number) => text.slice(groups[k - 1]!.end, groups[k]!.start);
  while (first > 0 && BOX_GAP.test(gap(first))) first--;
  while (first > 0 && groups.length - first < parts && PART_GAP.test(gap(first))) first--;
  const contents = [...new Set(groups.slice(first).map((b) => b.content.trim()))];
  return contents.join(', ');
}

/** The last number written in `text` (`1,000.99`, `-5`, `2,74`), the plain-number extraction of last resort. */
export function lastNumber(text: string): string | null {
  const numbers = [...text.matchAll(/-?\d[\d,]*(?:\.\d+)?(?:\/\d+)?/g)].map((m) => m[0].replace(/,$/, ''));
  return numbers.at(-1) ?? null;
}

/** The last number of the text's last sentence when it comes after `after` (prose that ends the output). */
function closingNumber(text: string, after: number): string | null {
  const rest = text.slice(after);
  const sentences = rest.split(/(?<=[.!?])\s+(?=[A-Z])/).filter((s) => /\d/.test(s) && !/^\s*I hope/.test(s));
  const last = sentences.at(-1);
  return last === undefined ? null : lastNumber(last);
}

/** The final answer of a math output, or null when nothing answer-like is in it. */
export function extractMathAnswer(output: string, options: ExtractOptions = {}): string | null {
  const section = answerSection(output);
  const fromAnswerMarker = section.fromAnswerMarker;
  // `\\boxed` (a doubly escaped string) is a box.
  const text = section.text.replace(/(?<!\\)\\\\(?=(?:boxed|fbox|frac|text)(?![a-zA-Z]))/g, '\\');
  const boxes = boxedGroups(text);
  const closing = lastClosingStatement(text);
  const lastBox = boxes.at(-1);
  if (closing && (!lastBox || closing.start >= lastBox.end)) return closing.answer;
  if (lastBox) return lastRun(text, boxes, options.parts ?? 1);
  if (closing) return closing.answer;
  const spans = mathSpans(text);
  if (spans.length > 0) return closingNumber(text, spans.at(-1)!.end) ?? lastRun(text, spans, options.parts ?? 1);
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  if (fromAnswerMarker && lines.length > 0) return lines[0]!;
  // A bare short answer (`\frac{10}{9}`, `x + 1`) is its own answer; prose falls back to its last number.
  if (lines.length === 1 && lines[0]!.length <= 80 && !/[a-zA-Z]{4,}(?![^{]*\})/.test(lines[0]!.replace(/\\[a-zA-Z]+/g, ''))) return lines[0]!;
  return lastNumber(text);
}
