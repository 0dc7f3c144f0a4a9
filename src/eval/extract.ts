// The final answer inside a model's output, as s1 reads it: s1-style models think after `<|im_start|>think`
// and answer after `<|im_start|>answer`, so only the text after the last answer marker counts when there is
// one; within it the last `\boxed{…}` (or `\fbox`), else what follows the last `Answer:`.
import { matchingBrace } from './math-equivalence.ts';

export const THINK_MARKER = '<|im_start|>think';
export const ANSWER_MARKER = '<|im_start|>answer';

/** Chat markers a decoded output may still hold (generation stops on them, and they are decoded verbatim). */
const TRAILING_SPECIAL_TOKENS = /(?:<\|im_end\|>|<\|endoftext\|>|<\|im_start\|>)+\s*$/;

/** The text after the last `<|im_start|>answer`, or the whole output when there is none; end markers removed. */
export function answerSection(output: string): { text: string; fromAnswerMarker: boolean } {
  const at = output.lastIndexOf(ANSWER_MARKER);
  const text = at >= 0 ? output.slice(at + ANSWER_MARKER.length) : output;
  return { text: text.replace(TRAILING_SPECIAL_TOKENS, ''), fromAnswerMarker: at >= 0 };
}

const BOX_COMMANDS = ['\\boxed', '\\fbox', '\\framebox'];

/**
 * The content of the last complete `\boxed{…}` / `\fbox{…}` / `\framebox{…}` in `text` (braces balanced,
 * so `\boxed{\frac{1}{2}}` gives `\frac{1}{2}`), or `\boxed 5`'s `5`; null when there is none. A box left
 * open at the end (output cut by the token budget) is skipped for the one before it.
 */
export function lastBoxedContent(text: string): string | null {
  let end = text.length;
  while (end > 0) {
    let at = -1;
    let command = '';
    for (const c of BOX_COMMANDS) {
      const k = text.lastIndexOf(c, end - 1);
      if (k > at) {
        at = k;
        command = c;
      }
    }
    if (at < 0) return null;
    let i = at + command.length;
    if (/[a-zA-Z]/.test(text[i] ?? '')) {
      end = at; // a longer command such as \boxedsomething
      continue;
    }
    while (text[i] === ' ') i++;
    if (text[i] === '{') {
      const close = matchingBrace(text, i);
      if (close >= 0) return text.slice(i + 1, close);
    } else if (i > at + command.length) {
      // `\boxed 5` (TeX takes one token; MATH solutions write it before a `$`).
      const token = /^[^\s$]+/.exec(text.slice(i))?.[0];
      if (token) return token;
    }
    end = at;
  }
  return null;
}

/** What follows the last `Answer:` on its line (or the next non-empty line), without markdown and `$`. */
export function textAfterLastAnswerLabel(text: string): string | null {
  const at = text.lastIndexOf('Answer:');
  if (at < 0) return null;
  const rest = text.slice(at + 'Answer:'.length);
  const line = rest.split('\n').map((l) => l.trim()).find((l) => l !== '');
  if (line === undefined) return null;
  const cleaned = line.replace(/\*\*/g, '').replace(/[\s.]+$/, '').replace(/^\$+|\$+$/g, '').replace(/^\\\(|\\\)$/g, '').trim();
  return cleaned === '' ? null : cleaned;
}

/**
 * The final answer of a MATH / AIME output: the last box in the answer section, else the text after its last
 * `Answer:`, else (when there is an answer marker) the answer section's first line; null when nothing.
 */
export function extractMathAnswer(output: string): string | null {
  const { text, fromAnswerMarker } = answerSection(output);
  const boxed = lastBoxedContent(text);
  if (boxed !== null) return boxed.trim();
  const labelled = textAfterLastAnswerLabel(text);
  if (labelled !== null) return labelled;
  if (!fromAnswerMarker) return null;
  const first = text.split('\n').map((l) => l.trim()).find((l) => l !== '');
  return first === undefined ? null : first.replace(/^\$+|\$+$/g, '').trim() || null;
}

export const CHOICE_LETTERS = ['A', 'B', 'C', 'D'] as const;
export type ChoiceLetter = (typeof CHOICE_LETTERS)[number];

/** A letter A–D stated by a short answer: `B`, `(B)`, `B)`, `\text{B}`, `**B**`, `B. text`; or the text of one choice. */
export function letterFromAnswer(answer: string, choices?: readonly string[]): ChoiceLetter | null {
  let s = answer.trim();
  for (let previous = ''; previous !== s;) {
    previous = s;
    s = s.replace(/^\\(?:text|textbf|mathrm|mathbf)\{(.*)\}$/s, '$1').replace(/^\*\*(.*)\*\*$/s, '$1').replace(/^\$(.*)\$$/s, '$1').trim();
  }
  const letter = /^\(?([A-D])\)?(?:$|[\s.):,])/.exec(s);
  if (letter) return letter[1] as ChoiceLetter;
  if (choices) {
    const wanted = normaliseChoiceText(s);
    const matches = choices.map((c, k) => (normaliseChoiceText(c) === wanted ? k : -1)).filter((k) => k >= 0);
    if (matches.length === 1) return CHOICE_LETTERS[matches[0]!]!;
  }
  return null;
}

function normaliseChoiceText(s: string): string {
  return s.replace(/\s+/g, ' ').replace(/[.\s]+$/, '').trim().toLowerCase();
}

/**
 * The letter a GPQA output picks: from the last box, else the last `Answer:`, else the last "answer is (X)"
 * in the answer section. s1 sends outputs it cannot read to gpt-4o-mini (and counts a failure as "A"); here
 * an unreadable output is null and graded wrong.
 */
export function extractChoiceLetter(output: string, choices?: readonly string[]): ChoiceLetter | null {
  const { text } = answerSection(output);
  const boxed = lastBoxedContent(text);
  if (boxed !== null) {
    const letter = letterFromAnswer(boxed, choices);
    if (letter) return letter;
  }
  const labelled = textAfterLastAnswerLabel(text);
  if (labelled !== null) {
    const letter = letterFromAnswer(labelled, choices);
    if (letter) return letter;
  }
  const phrases = [...text.matchAll(/[Aa]nswer\s+is\s*:?\s*\**\s*\(?([A-D])\)?(?![a-zA-Z])/g)];
  const last = phrases.at(-1);
  return last ? (last[1] as ChoiceLetter) : null;
}
