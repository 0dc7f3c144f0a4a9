// Reading the final answer out of a model's output, as s1 does.
import { describe, expect, it } from 'vitest';
import { answerSection, extractChoiceLetter, extractMathAnswer, lastBoxedContent, lastClosingStatement, letterFromAnswer } from '../src/eval/extract.ts';

describe('lastBoxedContent', () => {
  it.each([
    ['the answer is $\\boxed{5}$.', '5'],
    ['\\boxed{1} then \\boxed{2}', '2'],
    ['nested: \\boxed{\\frac{1}{2}}', '\\frac{1}{2}'],
    ['deep: \\boxed{\\left(\\frac{a}{b}, \\sqrt{\\frac{1}{2}}\\right)}', '\\left(\\frac{a}{b}, \\sqrt{\\frac{1}{2}}\\right)'],
    ['fbox: \\fbox{42}', '42'],
    ['AIME solutions: $\\framebox{204}$ minutes', '204'],
    ['escaped braces: \\boxed{\\{1, 2\\}}', '\\{1, 2\\}'],
    ['old MATH style: $\\boxed 7$', '7'],
    ['space before brace: \\boxed {9}', '9'],
    ['\\boxed{3} and an unclosed \\boxed{4', '3'],
  ])('%s → %s', (text, expected) => {
    expect(lastBoxedContent(text)).toBe(expected);
  });

  it('is null without a box, and ignores longer commands', () => {
    expect(lastBoxedContent('no box here')).toBeNull();
    expect(lastBoxedContent('\\boxed{')).toBeNull();
    expect(lastBoxedContent('\\boxedanswer{3}')).toBeNull();
  });
});

describe('answerSection', () => {
  it('takes the text after the last answer marker and drops end markers', () => {
    const output = 'thinking <|im_start|>answer\nfirst<|im_start|>answer\nAnswer: 5<|im_end|>';
    expect(answerSection(output)).toEqual({ text: '\nAnswer: 5', fromAnswerMarker: true });
    expect(answerSection('no marker<|endoftext|>')).toEqual({ text: 'no marker', fromAnswerMarker: false });
  });
});

describe('extractMathAnswer', () => {
  it.each<[string, string | null]>([
    ['<|im_start|>think\nmaybe \\boxed{3}?\n<|im_start|>answer\nAnswer: The answer is $\\boxed{4}$<|im_end|>', '4'],
    ['<|im_start|>think\nmaybe \\boxed{3}?\n<|im_start|>answer\nAnswer: 12<|im_end|>', '12'],
    ['thinking aloud, no marker, so the whole output counts: \\boxed{7}', '7'],
    ['Answer: $\\frac{1}{2}$.\nmore text', '\\frac{1}{2}'],
    ['Final Answer: **42**', '42'],
    ['Answer:\n\n  17  \n', '17'],
    ['<|im_start|>answer\n$x = 3$\n', 'x = 3'],
    ['no answer at all', null],
    ['<|im_start|>think\nrunning out of tokens \\boxed{', null],
  ])('%j → %j', (output, expected) => {
    expect(extractMathAnswer(output)).toBe(expected);
  });

  it('prefers a box over an Answer: label in the same section', () => {
    expect(extractMathAnswer('Answer: 3, but really \\boxed{5}')).toBe('5');
    expect(lastClosingStatement('Answer: 1\nAnswer: 2')?.answer).toBe('2');
  });
});

describe('GPQA letters', () => {
  const choices = ['Mercury', 'Venus', 'Earth', 'Mars'];

  it.each<[string, string | null]>([
    ['<|im_start|>answer\nAnswer: B<|im_end|>', 'B'],
    ['<|im_start|>answer\nAnswer: (C) Earth', 'C'],
    ['The final choice is \\boxed{D}', 'D'],
    ['\\boxed{\\text{A}}', 'A'],
    ['Answer: **B**', 'B'],
    ['Answer: B. Venus', 'B'],
    ['Answer: Mars', 'D'],
    ['after thinking, the answer is (C).', 'C'],
    ['the answer is a planet', null],
    ['<|im_start|>think\nI guess \\boxed{A}\n<|im_start|>answer\nAnswer: D', 'D'],
    ['nothing to read', null],
  ])('%j → %j', (output, expected) => {
    expect(extractChoiceLetter(output, choices)).toBe(expected);
  });

  it('reads letters only in the A–D range', () => {
    expect(letterFromAnswer('E')).toBeNull();
    expect(letterFromAnswer('(a)')).toBeNull();
    expect(letterFromAnswer('Venus', choices)).toBe('B');
    expect(letterFromAnswer('Venus')).toBeNull();
  });
});
