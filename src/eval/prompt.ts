// Prompts as s1 builds them (simplescaling/lm-evaluation-harness, used with --apply_chat_template): the
// problem is the only user message, rendered with the model's chat template and its generation prompt
// (`<|im_start|>assistant\n` for Qwen), and `<|im_start|>think` is appended to open the thinking phase.
import { encodeChat, renderChat, type ChatTokenizer } from '../model/chat-template.ts';
import { CHOICE_LETTERS, THINK_MARKER } from './extract.ts';
import type { EvalProblem } from './benchmarks.ts';

/**
 * The user message for a problem. MATH-500 and AIME: the problem text alone (s1's `QUERY_TEMPLATE =
 * '{Question}'`). GPQA: s1's tasks/gpqa/openai template, "{Question}\n\nA) {choice1}\nB) …\nD) {choice4}",
 * which adds no instruction (its harness has simple-evals' "Answer with the letter…" instruction only in
 * comments); the letter is read from the output afterwards (see extractChoiceLetter).
 */
export function userMessage(problem: EvalProblem): string {
  if (!problem.choices) return problem.problem;
  if (problem.choices.length !== CHOICE_LETTERS.length) throw new Error(`problem ${problem.index}: expected ${CHOICE_LETTERS.length} choices, got ${problem.choices.length}`);
  return `${problem.problem}\n\n${problem.choices.map((c, k) => `${CHOICE_LETTERS[k]}) ${c}`).join('\n')}`;
}

/** The full prompt text: chat template + generation prompt + `<|im_start|>think`. */
export function buildEvalPrompt(chatTemplate: string, problem: EvalProblem): string {
  return renderChat(chatTemplate, [{ role: 'user', content: userMessage(problem) }], { addGenerationPrompt: true }) + THINK_MARKER;
}

/** The prompt as ids: buildEvalPrompt's, with the problem encoded as text (markers in it are no control tokens). */
export function evalPromptIds(tokenizer: ChatTokenizer, chatTemplate: string, problem: EvalProblem): number[] {
  return encodeChat(tokenizer, chatTemplate, [{ role: 'user', content: userMessage(problem) }], { addGenerationPrompt: true, suffix: THINK_MARKER });
}
