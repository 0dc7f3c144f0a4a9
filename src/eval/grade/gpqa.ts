// The letter (A–D) a multiple-choice output picks, in the forms models write: `\boxed{B}`, `(B)`, `B.`,
// `**B**`, `Answer: B`, `the answer is (B)`, `the correct option is B`, or a letter opening the answer
// (`A. Because B is not valid` → A). The last statement wins, as with math answers. An output that states no
// letter is null and graded wrong (s1 asks gpt-4o-mini to read such outputs; rank1 does not call out).
import { answerSection } from './answer-section.ts';
import { boxedGroups } from './latex-text.ts';

export const CHOICE_LETTERS = ['A', 'B', 'C', 'D'] as const;
export type ChoiceLetter = (typeof CHOICE_LETTERS)[number];

/** Markup around a stated letter: `\text{B}`, `**B**`, `$B$`, `\textbf{(B)}`. */
function unwrapLetter(answer: string): string {
  let s = answer.trim();
  for (let previous = ''; previous !== s;) {
    previous = s;
    s = s.replace(/^\\(?:text|textbf|mathrm|mathbf|textnormal)\{(.*)\}$/s, '$1').replace(/^\*\*(.*)\*\*$/s, '$1')
      .replace(/^\$(.*)\$$/s, '$1').replace(/^(?:option|choice)\s+/i, '').trim();
  }
  return s;
}

/** A letter A–D stated by a short answer (`B`, `(B)`, `B)`, `B. text`), or the text of exactly one choice. */
export function letterFromAnswer(answer: string, choices?: readonly string[]): ChoiceLetter | null {
  const s = unwrapLetter(answer);
  const letter = /^\(?([A-D])\)?(?:$|[\s.):,*])/.exec(s);
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

/** `answer is (B)`, `Answer: **B**`, `correct option is B`, `final answer: $\boxed{C}$` — the stated letter's text. */
const LETTER_STATEMENT = /(?:answer|option|choice)(?:\s+is)?\s*(?:\*\*)?\s*:?\s*(?:\*\*)?\s*((?:\\boxed\{|\$|\\text\{|\\textbf\{|\*\*)*\(?[A-D]\)?)(?![a-zA-Z])/gi;

/** `B`, `(B)`, `B.` or `**B**` opening the answer, followed by prose. */
const LEADING_LETTER = /^\s*(?:\*\*)?\(?([A-D])\)?(?:\*\*)?(?:[.):]|\s*$|\s+(?=[A-Z(]))/;

/** The letter a GPQA output picks, or null. */
export function extractChoiceLetter(output: string, choices?: readonly string[]): ChoiceLetter | null {
  const { text } = answerSection(output);
  const stated: Array<{ at: number; letter: ChoiceLetter }> = [];
  for (const box of boxedGroups(text)) {
    const letter = letterFromAnswer(box.content, choices);
    if (letter) stated.push({ at: box.start, letter });
  }
  for (const match of text.matchAll(LETTER_STATEMENT)) {
    const letter = /[A-D]/.exec(match[1]!.replace(/\\[a-z]+/g, ''))?.[0] as ChoiceLetter | undefined;
    if (letter) stated.push({ at: match.index, letter });
  }
  const labelled = /answer\s*:\s*(.+)$/im.exec(text.split('\n').filter((l) => /answer\s*:/i.test(l)).at(-1) ?? '');
  if (labelled) {
    const letter = letterFromAnswer(labelled[1]!.replace(/[.\s]+$/, ''), choices);
    if (letter) stated.push({ at: text.lastIndexOf(labelled[0]), letter });
  }
  if (stated.length > 0) return stated.reduce((a, b) => (b.at >= a.at ? b : a)).letter;
  const leading = LEADING_LETTER.exec(text);
  if (leading) return leading[1] as ChoiceLetter;
  return loneLetter(text);
}

/** In a short reply, the last standalone capital A–D that is not the article (`A cat`): `Because B is valid` → B. */
function loneLetter(text: string): ChoiceLetter | null {
  if (text.length > 200) return null;
  const letters = [...text.matchAll(/(?<![A-Za-z\\])(?:([B-D])|(A)(?!\s+[a-z]))(?![A-Za-z])/g)].map((m) => (m[1] ?? m[2]) as ChoiceLetter);
  return letters.at(-1) ?? null;
}
