// s1-style models think after `<|im_start|>think` and answer after `<|im_start|>answer`: when the marker is
// there, only the text after the last one is read for the answer.

export const THINK_MARKER = '<|im_start|>think';
export const ANSWER_MARKER = '<|im_start|>answer';

/** Chat markers a decoded output may still hold (generation stops on them, and they are decoded verbatim). */
const TRAILING_SPECIAL_TOKENS = /(?:<\|im_end\|>|<\|endoftext\|>|<\|im_start\|>)+\s*$/;

/** The text after the last `<|im_start|>answer`, or the whole output when there is none; end markers removed. */
export function answerSection(output: string): { text: string; fromAnswerMarker: boolean } {
  const at = output.lastIndexOf(ANSWER_MARKER);
  let text = at >= 0 ? output.slice(at + ANSWER_MARKER.length) : output;
  // A model that runs on past its turn (`… is 2/3. <|im_start|>user …`) has answered before the new turn.
  const turnEnd = text.search(NEXT_TURN);
  if (turnEnd >= 0) text = text.slice(0, turnEnd);
  return { text: text.replace(TRAILING_SPECIAL_TOKENS, ''), fromAnswerMarker: at >= 0 };
}

const NEXT_TURN = /<\|im_end\|>|<\|endoftext\|>|<\|im_start\|>(?:user|system|assistant)/;
