// Structured outputs for `rank1 serve` (`response_format: {"type": "json_schema", ...}` and `{"type":
// "json_object"}`): decoding is constrained so that the text is always a prefix of a JSON document the schema
// (./json-schema.ts) accepts, and the sequence stops the moment the document is complete. Even a tiny model
// then answers in the shape a client asked for (its words may be nonsense; the JSON parses).
//
// How: an incremental parser. `JsonConstraintState` holds the parser state of the text accepted so far — a
// stack of frames, one per value being read (the array at the top level, the string inside it, ...) — and
// checks a candidate token by feeding only the token's characters to that state: the cost of a check is the
// token's length, not the answer's (vLLM's guided decoding carries a grammar state the same way). The stack is
// persistent (frames are never changed in place; a step returns new top frames over the shared rest), so a
// check leaves the accepted state as it was and costs no copy. Verdicts: 'invalid', 'partial' (still a prefix
// of some accepted document) or 'complete'. The decoder tries candidates in the order the sampler prefers them
// and takes the first that is not invalid (./scheduler.ts).
//
// The verdicts are those of a recursive-descent check of the whole text (kept in
// test/helpers/json-prefix-reference.ts as the oracle the property tests compare with).
import { type PrefixStatus, type SchemaNode } from './json-schema.ts';
import { closeFrameAtEnd, plainStringRunEnd, resumeFrame, rootFrame, stepFrame, type Frame } from './json-frames.ts';

/** A parser stack: the frame being read on top of the frames waiting for it (null below the root). */
interface ParserStack {
  readonly frame: Frame;
  readonly below: ParserStack | null;
}

/** The stack after reading one more character (one UTF-16 unit), or null when no document can follow. */
function feedCharacter(stack: ParserStack, char: string): ParserStack | null {
  const step = stepFrame(stack.frame, char);
  switch (step.kind) {
    case 'dead':
      return null;
    case 'stay':
      return { frame: step.frame, below: stack.below };
    case 'become':
      // The frame found what it is reading (json_object's values) and reads the same character as that.
      return feedCharacter({ frame: step.frame, below: stack.below }, char);
    case 'open':
      // A value starts here: the waiting frame goes below, the value's frame reads the character.
      return feedCharacter({ frame: step.child, below: { frame: step.frame, below: stack.below } }, char);
    case 'done':
      return popAndFeed(stack, step.handBack);
  }
}

/** The value on top is finished: its parent resumes and reads what the value looked ahead at (`handBack`). */
function popAndFeed(stack: ParserStack, handBack: string): ParserStack | null {
  const parent = stack.below!;
  return feedText({ frame: resumeFrame(parent.frame), below: parent.below }, handBack);
}

/** The stack after reading `text`, or null when it can no longer be a prefix of an accepted document. */
function feedText(stack: ParserStack | null, text: string): ParserStack | null {
  for (let i = 0; i < text.length && stack;) {
    const { frame } = stack;
    // Most of an answer's characters are string contents: take their run in one step.
    if (frame.kind === 'string' && frame.phase === 'chars') {
      const end = plainStringRunEnd(frame, text, i);
      if (end > i) {
        stack = { frame: { ...frame, length: frame.length + end - i }, below: stack.below };
        i = end;
        continue;
      }
    }
    stack = feedCharacter(stack, text[i]!);
    i++;
  }
  return stack;
}

/** The verdict on the text read into `stack` if the text ended here. */
function statusAtEnd(stack: ParserStack | null): PrefixStatus {
  if (!stack) return 'invalid';
  const end = closeFrameAtEnd(stack.frame);
  switch (end.kind) {
    case 'partial':
    case 'complete':
    case 'invalid':
      return end.kind;
    case 'done':
      // A value that is finished exactly at the end (a literal): its parent decides.
      return statusAtEnd(popAndFeed(stack, end.handBack));
  }
}

/** The text accepted so far, as parser state: checks the next piece in time proportional to the piece. */
export class JsonConstraintState {
  private stack: ParserStack | null;
  private accepted: PrefixStatus;

  constructor(node: SchemaNode) {
    this.stack = { frame: rootFrame(node), below: null };
    this.accepted = 'partial';
  }

  /** The verdict on the text accepted so far. */
  get status(): PrefixStatus {
    return this.accepted;
  }

  /** The verdict on the accepted text followed by `piece`; the state is unchanged. */
  statusWith(piece: string): PrefixStatus {
    return statusAtEnd(feedText(this.stack, piece));
  }

  /**
   * Appends `piece` to the accepted text and returns the verdict on it. A text that could only be invalid
   * forever is dropped from then on; one that is invalid only as it stands is kept, since a later piece can
   * still make it valid (under maximum 5, 6 is invalid but 6e-1 is 0.6).
   */
  accept(piece: string): PrefixStatus {
    this.stack = feedText(this.stack, piece);
    this.accepted = statusAtEnd(this.stack);
    return this.accepted;
  }
}

/** Whether `text` is a prefix of a document `node` accepts, or such a document (read from scratch). */
export function prefixStatus(node: SchemaNode, text: string): PrefixStatus {
  return statusAtEnd(feedText({ frame: rootFrame(node), below: null }, text));
}
