// The frames of the incremental structured-outputs parser (./json-constraint.ts): one frame per JSON value
// being read, as immutable data, and what each does with the next character. A frame is the state of one
// recursive-descent function stopped between two characters: `phase` says where in the value it is, `spaces`
// counts the whitespace of the current gap (at most MAX_WHITESPACE), and a finished value hands back the
// characters it read ahead (a number knows it has ended only at the next character).
import {
  ANY_ARRAY, ANY_KEY_LENGTH, ANY_MAX_DEPTH, ANY_NUMBER, MAX_NUMBER_CHARS, MAX_STRING, MAX_WHITESPACE, NUMBER_CHAR,
  canGrowIntoNumber, isAcceptedNumber, type NumberNode, type SchemaNode,
} from './json-schema.ts';

type ArrayNode = Extract<SchemaNode, { kind: 'array' }>;
type ObjectNode = Extract<SchemaNode, { kind: 'object' }>;
type Gap = { spaces: number };

export type Frame =
  | { kind: 'root'; node: SchemaNode; phase: 'lead' | 'value' | 'trail' } & Gap
  | { kind: 'string'; maxLength: number; phase: 'open' | 'chars' | 'escape' | 'hex'; length: number; hexDigits: number }
  | { kind: 'number'; node: NumberNode; body: string }
  /** `read`: the characters read so far (a prefix of some literal); `matched`: the longest literal among them. */
  | { kind: 'literal'; texts: readonly string[]; read: string; matched: number }
  | { kind: 'array'; node: ArrayNode; phase: 'open' | 'afterOpen' | 'item' | 'afterItem' | 'afterComma'; count: number } & Gap
  | { kind: 'object'; node: ObjectNode; phase: ObjectPhase; index: number; keyRead: number } & Gap
  /** json_object's value whose first character is not read yet; nesting `depth` is bounded. */
  | { kind: 'anyValue'; depth: number }
  | { kind: 'anyObject'; depth: number; phase: ObjectPhase } & Gap;

type ObjectPhase = 'open' | 'afterOpen' | 'key' | 'afterKey' | 'afterColon' | 'value' | 'afterValue' | 'afterComma';

/** What a frame does with one character. */
export type Step =
  | { kind: 'dead' }
  | { kind: 'stay'; frame: Frame }
  /** The frame is replaced by `frame`, which reads the same character. */
  | { kind: 'become'; frame: Frame }
  /** A value starts: `frame` waits below while `child` reads the character. */
  | { kind: 'open'; frame: Frame; child: Frame }
  /** The value is finished; its parent reads `handBack` (characters read ahead), then goes on. */
  | { kind: 'done'; handBack: string };

/** The verdict on a frame if the text ended now; 'done': the value is finished and its parent decides. */
export type EndStep = { kind: 'partial' | 'complete' | 'invalid' } | { kind: 'done'; handBack: string };

const DEAD: Step = { kind: 'dead' };
const DONE: Step = { kind: 'done', handBack: '' };
const WHITESPACE = ' \n\t\r';
const BOOLEANS = ['true', 'false'];
const NULL = ['null'];
const ANY_LITERALS = ['true', 'false', 'null'];

const stay = (frame: Frame): Step => ({ kind: 'stay', frame });

export function rootFrame(node: SchemaNode): Frame {
  return { kind: 'root', node, phase: 'lead', spaces: 0 };
}

/** The frame that reads a value of `node` (created at the value's first character). */
function valueFrame(node: SchemaNode): Frame {
  switch (node.kind) {
    case 'string': return stringFrame(node.maxLength);
    case 'number': return { kind: 'number', node, body: '' };
    case 'boolean': return literalFrame(BOOLEANS);
    case 'null': return literalFrame(NULL);
    case 'literals': return literalFrame(node.texts);
    case 'array': return { kind: 'array', node, phase: 'open', count: 0, spaces: 0 };
    case 'object': return { kind: 'object', node, phase: 'open', index: 0, keyRead: 0, spaces: 0 };
    case 'any': return { kind: 'anyValue', depth: 0 };
  }
}

const stringFrame = (maxLength: number): Frame => ({ kind: 'string', maxLength, phase: 'open', length: 0, hexDigits: 0 });
const literalFrame = (texts: readonly string[]): Frame => ({ kind: 'literal', texts, read: '', matched: -1 });

/** In a gap between tokens: one more whitespace character (dead past the limit), or null if `char` is none. */
function gap<F extends Frame & Gap>(frame: F, char: string): Step | null {
  if (!WHITESPACE.includes(char)) return null;
  return frame.spaces + 1 > MAX_WHITESPACE ? DEAD : stay({ ...frame, spaces: frame.spaces + 1 } as F);
}

export function stepFrame(frame: Frame, char: string): Step {
  switch (frame.kind) {
    case 'root': return stepRoot(frame, char);
    case 'string': return stepString(frame, char);
    case 'number': return stepNumber(frame, char);
    case 'literal': return stepLiteral(frame, char);
    case 'array': return stepArray(frame, char);
    case 'object': return stepObject(frame, char);
    case 'anyValue': return stepAnyValue(frame, char);
    case 'anyObject': return stepAnyObject(frame, char);
  }
}

/** The frame below a finished value, moved past it. */
export function resumeFrame(frame: Frame): Frame {
  if (frame.kind === 'root') return { ...frame, phase: 'trail' };
  if (frame.kind === 'array') return { ...frame, phase: 'afterItem', count: frame.count + 1, spaces: 0 };
  if (frame.kind === 'object') return { ...frame, phase: 'afterValue', spaces: 0 };
  if (frame.kind === 'anyObject') return { ...frame, phase: frame.phase === 'key' ? 'afterKey' : 'afterValue', spaces: 0 };
  throw new Error(`a ${frame.kind} frame holds no values`);
}

export function closeFrameAtEnd(frame: Frame): EndStep {
  if (frame.kind === 'root') return { kind: frame.phase === 'trail' ? 'complete' : 'partial' };
  if (frame.kind === 'number') return { kind: canGrowIntoNumber(frame.body, frame.node) ? 'partial' : 'invalid' };
  if (frame.kind !== 'literal') return { kind: 'partial' };
  const { texts, read, matched } = frame;
  // A whole literal at the end is finished unless a longer one goes on from it (1 and 12: still growing).
  if (texts.includes(read)) return texts.some((l) => l.length > read.length && l.startsWith(read)) ? { kind: 'partial' } : { kind: 'done', handBack: '' };
  return matched >= 0 ? { kind: 'done', handBack: read.slice(matched) } : { kind: 'partial' };
}

function stepRoot(frame: Extract<Frame, { kind: 'root' }>, char: string): Step {
  if (frame.phase === 'trail') return char.trim() === '' ? stay(frame) : DEAD;
  const space = gap(frame, char);
  if (space) return space;
  // json_object and schema roots must be objects (or the schema's own type).
  if (frame.node.kind === 'any' && char !== '{') return DEAD;
  return { kind: 'open', frame: { ...frame, phase: 'value' }, child: valueFrame(frame.node) };
}

function stepString(frame: Extract<Frame, { kind: 'string' }>, char: string): Step {
  switch (frame.phase) {
    case 'open':
      return char === '"' ? stay({ ...frame, phase: 'chars' }) : DEAD;
    case 'chars':
      if (char === '"') return DONE;
      if (char < ' ') return DEAD;
      // A full string may only close: checked before the character, so no escape can start that cannot end.
      if (frame.length >= frame.maxLength) return DEAD;
      return stay(char === '\\' ? { ...frame, phase: 'escape' } : { ...frame, length: frame.length + 1 });
    case 'escape':
      if (char === 'u') return stay({ ...frame, phase: 'hex', hexDigits: 0 });
      return '"\\/bfnrt'.includes(char) ? stay({ ...frame, phase: 'chars', length: frame.length + 1 }) : DEAD;
    case 'hex':
      if (!/[0-9a-fA-F]/.test(char)) return DEAD;
      return stay(frame.hexDigits === 3 ? { ...frame, phase: 'chars', length: frame.length + 1 } : { ...frame, hexDigits: frame.hexDigits + 1 });
  }
}

/**
 * Where the run of plain characters (no quote, backslash or control character) that a string frame in its
 * 'chars' phase can take from `text[from]` on ends: each adds one to the length, up to maxLength. Reading the
 * run at once is the same as stepping it character by character, without a frame per character.
 */
export function plainStringRunEnd(frame: Extract<Frame, { kind: 'string' }>, text: string, from: number): number {
  const limit = Math.min(text.length, from + frame.maxLength - frame.length);
  let end = from;
  while (end < limit) {
    const char = text[end]!;
    if (char === '"' || char === '\\' || char < ' ') break;
    end++;
  }
  return end;
}

function stepNumber(frame: Extract<Frame, { kind: 'number' }>, char: string): Step {
  if (NUMBER_CHAR.test(char)) {
    const body = frame.body + char;
    return body.length > MAX_NUMBER_CHARS ? DEAD : stay({ ...frame, body });
  }
  // The run of number characters ended at `char`: the number is finished, and `char` is its parent's.
  return frame.body !== '' && isAcceptedNumber(frame.body, frame.node) ? { kind: 'done', handBack: char } : DEAD;
}

function stepLiteral(frame: Extract<Frame, { kind: 'literal' }>, char: string): Step {
  const { texts, read } = frame;
  let matched = frame.matched;
  // A whole literal counts unless it is a number that the next character would continue (1 then 2: not 1).
  if (texts.includes(read) && !(/^-?[0-9]/.test(read) && /[0-9.eE]/.test(char))) matched = Math.max(matched, read.length);
  const next = read + char;
  if (texts.some((l) => l.startsWith(next))) return stay({ ...frame, read: next, matched });
  return matched >= 0 ? { kind: 'done', handBack: next.slice(matched) } : DEAD;
}

function stepArray(frame: Extract<Frame, { kind: 'array' }>, char: string): Step {
  const { node, count } = frame;
  if (frame.phase === 'open') return char === '[' ? stay({ ...frame, phase: 'afterOpen' }) : DEAD;
  const space = gap(frame, char);
  if (space) return space;
  if (frame.phase === 'afterItem') {
    if (char === ']') return count >= node.minItems ? DONE : DEAD;
    // A comma promises another item: only while there is room for one.
    return char === ',' && count < node.maxItems ? stay({ ...frame, phase: 'afterComma', spaces: 0 }) : DEAD;
  }
  if (frame.phase === 'afterOpen' && char === ']') return node.minItems === 0 ? DONE : DEAD;
  if (count >= node.maxItems) return DEAD;
  return { kind: 'open', frame: { ...frame, phase: 'item' }, child: valueFrame(node.items) };
}

const propertyKeys = new WeakMap<ObjectNode, string[]>();

function keyOf(node: ObjectNode, index: number): string {
  let keys = propertyKeys.get(node);
  if (!keys) propertyKeys.set(node, (keys = node.properties.map(([name]) => JSON.stringify(name))));
  return keys[index]!;
}

function stepObject(frame: Extract<Frame, { kind: 'object' }>, char: string): Step {
  const { node, index } = frame;
  if (frame.phase === 'open') return char === '{' ? stay({ ...frame, phase: 'afterOpen' }) : DEAD;
  if (frame.phase === 'key') {
    const key = keyOf(node, index);
    if (char !== key[frame.keyRead]) return DEAD;
    const keyRead = frame.keyRead + 1;
    return stay(keyRead === key.length ? { ...frame, phase: 'afterKey', keyRead, spaces: 0 } : { ...frame, keyRead });
  }
  const space = gap(frame, char);
  if (space) return space;
  switch (frame.phase) {
    case 'afterOpen':
      if (node.properties.length === 0) return char === '}' ? DONE : DEAD;
      return stepObject({ ...frame, phase: 'key', keyRead: 0 }, char);
    case 'afterComma':
      return stepObject({ ...frame, phase: 'key', keyRead: 0 }, char);
    case 'afterKey':
      return char === ':' ? stay({ ...frame, phase: 'afterColon', spaces: 0 }) : DEAD;
    case 'afterColon':
      return { kind: 'open', frame: { ...frame, phase: 'value' }, child: valueFrame(node.properties[index]![1]) };
    case 'afterValue': {
      const last = index === node.properties.length - 1;
      if (last) return char === '}' ? DONE : DEAD;
      return char === ',' ? stay({ ...frame, phase: 'afterComma', index: index + 1, spaces: 0 }) : DEAD;
    }
    case 'value':
      throw new Error('an object frame reads no characters while its value is open');
  }
}

/** json_object's values: the first character says what the value is. */
function stepAnyValue(frame: Extract<Frame, { kind: 'anyValue' }>, char: string): Step {
  if (frame.depth > ANY_MAX_DEPTH) return DEAD;
  if (char === '"') return { kind: 'become', frame: stringFrame(MAX_STRING) };
  if (char === '{') return { kind: 'become', frame: { kind: 'anyObject', depth: frame.depth, phase: 'open', spaces: 0 } };
  // Array items start again at depth 0 (json_object bounds the nesting of objects only).
  if (char === '[') return { kind: 'become', frame: valueFrame(ANY_ARRAY) };
  if (char === '-' || (char >= '0' && char <= '9')) return { kind: 'become', frame: { kind: 'number', node: ANY_NUMBER, body: '' } };
  return { kind: 'become', frame: literalFrame(ANY_LITERALS) };
}

function stepAnyObject(frame: Extract<Frame, { kind: 'anyObject' }>, char: string): Step {
  if (frame.phase === 'open') return char === '{' ? stay({ ...frame, phase: 'afterOpen' }) : DEAD;
  const space = gap(frame, char);
  if (space) return space;
  switch (frame.phase) {
    case 'afterOpen':
      if (char === '}') return DONE;
      return { kind: 'open', frame: { ...frame, phase: 'key' }, child: stringFrame(ANY_KEY_LENGTH) };
    case 'afterComma':
      return { kind: 'open', frame: { ...frame, phase: 'key' }, child: stringFrame(ANY_KEY_LENGTH) };
    case 'afterKey':
      return char === ':' ? stay({ ...frame, phase: 'afterColon', spaces: 0 }) : DEAD;
    case 'afterColon':
      return { kind: 'open', frame: { ...frame, phase: 'value' }, child: { kind: 'anyValue', depth: frame.depth + 1 } };
    case 'afterValue':
      if (char === '}') return DONE;
      return char === ',' ? stay({ ...frame, phase: 'afterComma', spaces: 0 }) : DEAD;
    case 'key':
    case 'value':
      throw new Error('a json_object frame reads no characters while its key or value is open');
  }
}
