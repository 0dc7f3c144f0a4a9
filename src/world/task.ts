// The toy world's task family: a chain of operations on one digit, asked for the last digit of the result.
//
//   "Start with 7, then (1) add 5, (2) multiply by 3, (3) add 8, (4) multiply by 9. What is the last digit
//    of the result?"
//
// Why this family: each worked step is one memorisable fact (a one-digit sum or a product by 3, 7 or 9, then
// its last digit: 130 facts in all), so a small model can write a worked solution almost without error; but
// answering at once means composing every step in one forward pass. The maps x ↦ x + d and x ↦ m·x (mod 10,
// m a unit) do not commute, so the answer depends on the whole ordered chain (state tracking, which a shallow
// transformer cannot do in one pass for long chains), and since every map is a bijection of the digits the
// answer is uniform: nothing short of the composition beats a 10% guess. The difficulty knob is the number of
// operations.
import type { Random } from '../tensor/random.ts';

export type Operation = { kind: 'add'; operand: number } | { kind: 'multiply'; operand: number };

export interface ChainProblem {
  start: number;
  operations: Operation[];
}

/** Multipliers that are units mod 10: every step permutes the digits, so answers stay uniform. */
export const MULTIPLIERS = [3, 7, 9] as const;

/** Draws a problem with `count` operations: half adds (1–9), half multiplies (3, 7 or 9), in random order. */
export function randomProblem(rng: Random, count: number): ChainProblem {
  const operations: Operation[] = [];
  for (let i = 0; i < count; i++) {
    operations.push(rng.uniform() < 0.5
      ? { kind: 'add', operand: 1 + rng.int(9) }
      : { kind: 'multiply', operand: MULTIPLIERS[rng.int(MULTIPLIERS.length)]! });
  }
  return { start: rng.int(10), operations };
}

/** The full result of one step before its last digit is taken (a one- or two-digit number). */
export function applyFull(value: number, op: Operation): number {
  return op.kind === 'add' ? value + op.operand : value * op.operand;
}

/** The running digits: values[0] is the start, values[i] the last digit after operation i. */
export function runningDigits(problem: ChainProblem): number[] {
  const values = [problem.start];
  for (const op of problem.operations) values.push(applyFull(values[values.length - 1]!, op) % 10);
  return values;
}

export function answerOf(problem: ChainProblem): number {
  return runningDigits(problem).at(-1)!;
}

/**
 * An operation as the problem and the worked steps write it: "+5", "*3". The tokenizer keeps an operator
 * with its digit as one piece, so a step finds its operation by copying the one token after "(i)" in the
 * question: the plainest induction-head pattern. Worded forms ("add 5", "multiply by 3") put the operand two
 * or three tokens after the index, and a 4-layer model had not learned to copy it after 30 000 pages.
 */
export function operationText(op: Operation): string {
  return `${symbolOf(op)}${op.operand}`;
}

/** The question as the user asks it (also the `problem` of held-out rows and the key that keeps splits disjoint). */
export function questionText(problem: ChainProblem): string {
  const steps = problem.operations.map((op, i) => `(${i + 1}) ${operationText(op)}`).join(', ');
  return `Start with ${problem.start}, then ${steps}. What is the last digit of the result?`;
}

/**
 * One worked step: "(2) *3: 2 * 3 = 6, last digit 6." — `full` may be a wrong value (a slip to be corrected).
 * The step restates its operation right after its number, as the problem writes it (see operationText).
 */
export function stepLine(index: number, value: number, op: Operation, full: number = applyFull(value, op)): string {
  return `(${index + 1}) ${operationText(op)}: ${value} ${symbolOf(op)} ${op.operand} = ${full}, last digit ${full % 10}.`;
}

function symbolOf(op: Operation): string {
  return op.kind === 'add' ? '+' : '*';
}

/** The worked solution's lines, as a textbook writes them (no checks). */
export function workedLines(problem: ChainProblem): string[] {
  const values = runningDigits(problem);
  return [`Start: ${problem.start}.`, ...problem.operations.map((op, i) => stepLine(i, values[i]!, op))];
}

/** A check line re-deriving step i ("Wait, let me check (2): 2 * 3 = 6, last digit 6. Yes."). */
export function checkLine(problem: ChainProblem, index: number, style: 'trace' | 'textbook'): string {
  const values = runningDigits(problem);
  const op = problem.operations[index]!;
  const body = `${values[index]} ${symbolOf(op)} ${op.operand} = ${applyFull(values[index]!, op)}, last digit ${values[index + 1]}.`;
  return style === 'trace' ? `Wait, let me check (${index + 1}): ${body} Yes.` : `Check (${index + 1}): ${body} Correct.`;
}

/** The direct answer an instruct model gives (and the s1 `deepseek_attempt`). */
export function directAnswer(problem: ChainProblem): string {
  return `The last digit is \\boxed{${answerOf(problem)}}.`;
}

/** An answer given at once in s1's answer-section form, the second half of `s1AssistantText`. */
export function answerSection(answer: string): string {
  return `<|im_start|>answer\nAnswer: ${answer}`;
}

/** Ends a plain-text document in the pretraining corpus, so the model learns where a page stops. */
export const END_OF_TEXT = '<|endoftext|>';

/**
 * How a page states its answer: `Answer: 4` (world versions 1 and 2), or in the words the s1 answer section
 * uses, `Answer: The last digit is \boxed{4}.` (version 3), so that after worked steps those words copy the
 * conclusion just reached.
 */
export type PageAnswerStyle = 'digit' | 'sentence';

/**
 * A plain-text page of the pretraining corpus: the problem, its worked solution, the answer, end of text. With
 * probability `thinkAloudShare` the solution is worked aloud in the register of the reasoning traces ("Okay, let
 * me work through this step by step.", "Wait, let me check (3): … Yes.", a corrected slip at `slipRate`, "So the
 * last digit is 4."), otherwise as a textbook writes it (sometimes with a "Check (2): … Correct." line). Either
 * way it is plain text, never a chat: the base knows how to reason aloud, but not that a chat is the place.
 */
export function textbookPage(problem: ChainProblem, rng: Random, thinkAloudShare = 0, slipRate = 0, answerStyle: PageAnswerStyle = 'digit'): string {
  const answerLine = answerStyle === 'digit' ? `Answer: ${answerOf(problem)}` : `Answer: ${directAnswer(problem)}`;
  if (rng.uniform() < thinkAloudShare) {
    return `${textbookPrompt(problem)}${reasoningTrajectory(problem, rng, slipRate)}\n${answerLine}${END_OF_TEXT}`;
  }
  const lines = workedLines(problem);
  if (problem.operations.length > 1 && rng.uniform() < 0.3) {
    const index = rng.int(problem.operations.length);
    lines.splice(index + 2, 0, checkLine(problem, index, 'textbook'));
  }
  return `${textbookPrompt(problem)}${lines.join('\n')}\n${answerLine}${END_OF_TEXT}`;
}

/** The opening of a textbook page, up to where the worked solution starts (also the probe's prompt). */
export function textbookPrompt(problem: ChainProblem | string): string {
  return `Problem: ${typeof problem === 'string' ? problem : questionText(problem)}\nSolution:\n`;
}

/**
 * An R1-style thinking trajectory: the worked steps, one or two "Wait, let me check" re-derivations, and with
 * probability `slipRate` a slip in one step that the next line catches and corrects.
 */
export function reasoningTrajectory(problem: ChainProblem, rng: Random, slipRate: number): string {
  const values = runningDigits(problem);
  const lines = ['Okay, let me work through this step by step.', `Start: ${problem.start}.`];
  const count = problem.operations.length;
  const slipAt = rng.uniform() < slipRate ? rng.int(count) : -1;
  const checks = new Set<number>();
  const checkCount = 1 + rng.int(2);
  while (checks.size < Math.min(checkCount, count)) checks.add(rng.int(count));
  for (let i = 0; i < count; i++) {
    const op = problem.operations[i]!;
    const full = applyFull(values[i]!, op);
    if (i === slipAt) {
      // A wrong sum or product, off by one or two, with its wrong last digit; then the correction.
      const delta = 1 + rng.int(2);
      const wrong = rng.uniform() < 0.5 && full - delta >= 0 ? full - delta : full + delta;
      lines.push(stepLine(i, values[i]!, op, wrong));
      lines.push(`Wait, let me check (${i + 1}): ${values[i]} ${symbolOf(op)} ${op.operand} = ${full}, not ${wrong}. So the last digit is ${full % 10}.`);
    } else {
      lines.push(stepLine(i, values[i]!, op));
      if (checks.has(i)) lines.push(checkLine(problem, i, 'trace'));
    }
  }
  lines.push(`So the last digit is ${answerOf(problem)}.`);
  return lines.join('\n');
}

/** A stable key for a problem (its question text): the splits are disjoint on it. */
export function problemKey(problem: ChainProblem): string {
  return questionText(problem);
}
