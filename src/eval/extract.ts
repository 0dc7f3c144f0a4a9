// Where answers are read from a model's output; the readers live in src/eval/grade/ (one module each), this
// file keeps the names the rest of rank1 imports.
import { boxedGroups } from './grade/latex-text.ts';

export { ANSWER_MARKER, THINK_MARKER, answerSection } from './grade/answer-section.ts';
export { extractMathAnswer, lastClosingStatement } from './grade/extract-answer.ts';
export { CHOICE_LETTERS, extractChoiceLetter, letterFromAnswer, type ChoiceLetter } from './grade/gpqa.ts';

/** The content of the last complete `\boxed{…}` / `\fbox{…}` / `\framebox{…}` in `text`, or null. */
export function lastBoxedContent(text: string): string | null {
  return boxedGroups(text).at(-1)?.content ?? null;
}
