// The structured-outputs checker as it was before it became incremental (src/serve/json-constraint.ts): a
// recursive descent that re-parses the whole text on every call. Kept unchanged as the oracle the incremental
// checker must agree with, verdict for verdict (test/json-constraint.test.ts).
import type { PrefixStatus, SchemaNode } from '../../src/serve/json-schema.ts';

const MAX_STRING = 2000;
const MAX_WHITESPACE = 1;
const MAX_NUMBER_CHARS = 24;

// ---- the checker: parse(node, text, pos) -> END (ran out of text while valid) | INVALID | position after ----

const END = -1;
const INVALID = -2;

function skipWhitespace(text: string, pos: number): number {
  let n = 0;
  while (pos < text.length && ' \n\t\r'.includes(text[pos]!)) {
    if (++n > MAX_WHITESPACE) return INVALID;
    pos++;
  }
  return pos;
}

function parseString(text: string, pos: number, maxLength: number): number {
  if (pos >= text.length) return END;
  if (text[pos] !== '"') return INVALID;
  pos++;
  let length = 0;
  while (pos < text.length) {
    const c = text[pos]!;
    if (c === '"') return pos + 1;
    if (c < ' ') return INVALID;
    // A full string may only close: checked before the character, so no escape can start that cannot end.
    if (length >= maxLength) return INVALID;
    if (c === '\\') {
      if (pos + 1 >= text.length) return END;
      const e = text[pos + 1]!;
      if (e === 'u') {
        const hex = text.slice(pos + 2, pos + 6);
        if (!/^[0-9a-fA-F]*$/.test(hex)) return INVALID;
        if (hex.length < 4) return END;
        pos += 6;
      } else if ('"\\/bfnrt'.includes(e)) pos += 2;
      else return INVALID;
    } else pos++;
    length++;
  }
  return END;
}

function parseNumber(text: string, pos: number, node: Extract<SchemaNode, { kind: 'number' }>): number {
  const start = pos;
  while (pos < text.length && /[-+0-9.eE]/.test(text[pos]!)) pos++;
  const body = text.slice(start, pos);
  if (body.length === 0) return pos >= text.length ? END : INVALID;
  if (body.length > MAX_NUMBER_CHARS) return INVALID;
  const pattern = node.integer ? /^-?(0|[1-9][0-9]*)$/ : /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$/;
  const partialPattern = node.integer ? /^-?(0|[1-9][0-9]*)?$/ : /^-?((0|[1-9][0-9]*)(\.[0-9]*)?([eE][-+]?[0-9]*)?)?$/;
  const atEnd = pos >= text.length;
  if (atEnd) {
    // Still being written: it must be able to end up in range (12 may grow to 120; with maximum 6 it may not).
    if (!partialPattern.test(body)) return INVALID;
    if (node.integer) return integerCanReach(body, node.minimum, node.maximum) ? END : INVALID;
    const value = Number(body);
    if (body === '-' ) return node.minimum < 0 ? END : INVALID;
    if (Number.isFinite(value) && value > node.maximum && value >= 0 && !/[.eE]/.test(body)) return INVALID;
    if (Number.isFinite(value) && value < node.minimum && value <= 0 && !/[.eE]/.test(body)) return INVALID;
    return END;
  }
  if (!pattern.test(body)) return INVALID;
  const value = Number(body);
  return value >= node.minimum && value <= node.maximum ? pos : INVALID;
}

/** Whether the integer being written (a valid prefix: '', '-', '-12', '0') can still end in [minimum, maximum]. */
function integerCanReach(body: string, minimum: number, maximum: number): boolean {
  if (minimum > maximum) return false;
  if (body === '') return true;
  if (body === '-') return minimum <= -1;
  const negative = body.startsWith('-');
  const digits = negative ? body.slice(1) : body;
  const p = Number(digits);
  const extensible = digits !== '0';
  for (let k = 0; k <= (extensible ? 15 - digits.length : 0); k++) {
    const low = p * 10 ** k;
    const high = k === 0 ? p : (p + 1) * 10 ** k - 1;
    const [from, to] = negative ? [-high, -low] : [low, high];
    if (to >= minimum && from <= maximum) return true;
  }
  return false;
}

function parseLiteral(text: string, pos: number, texts: readonly string[]): number {
  // The longest literal the text fully matches here, or END if the text is a prefix of one.
  let best = INVALID;
  for (const literal of texts) {
    const piece = text.slice(pos, pos + literal.length);
    if (piece === literal) {
      // A number literal must not be followed by more digits (1 vs 12).
      const next = text[pos + literal.length];
      if (next !== undefined && /[0-9.eE]/.test(next) && /^-?[0-9]/.test(literal)) continue;
      best = Math.max(best, pos + literal.length);
    } else if (literal.startsWith(piece) && pos + piece.length >= text.length) {
      if (best === INVALID) best = END;
    }
  }
  // A complete literal that is also a prefix of a longer one (1 and 12): at the end of text, still growing.
  if (best > 0 && best >= text.length && texts.some((l) => l.length > best - pos && l.startsWith(text.slice(pos)))) return END;
  return best;
}

function parseValue(node: SchemaNode, text: string, pos: number): number {
  if (pos >= text.length) return END;
  switch (node.kind) {
    case 'string':
      return parseString(text, pos, node.maxLength);
    case 'number':
      return parseNumber(text, pos, node);
    case 'boolean':
      return parseLiteral(text, pos, ['true', 'false']);
    case 'null':
      return parseLiteral(text, pos, ['null']);
    case 'literals':
      return parseLiteral(text, pos, node.texts);
    case 'array':
      return parseArray(node, text, pos);
    case 'object':
      return parseObject(node, text, pos);
    case 'any':
      return parseAny(text, pos, 0);
  }
}

function parseArray(node: Extract<SchemaNode, { kind: 'array' }>, text: string, pos: number): number {
  if (text[pos] !== '[') return INVALID;
  pos = skipWhitespace(text, pos + 1);
  if (pos < 0) return pos;
  if (pos >= text.length) return END;
  let count = 0;
  if (text[pos] === ']') return node.minItems === 0 ? pos + 1 : INVALID;
  for (;;) {
    if (count >= node.maxItems) return INVALID;
    pos = parseValue(node.items, text, pos);
    if (pos < 0) return pos;
    count++;
    pos = skipWhitespace(text, pos);
    if (pos < 0) return pos;
    if (pos >= text.length) return END;
    if (text[pos] === ']') return count >= node.minItems ? pos + 1 : INVALID;
    // A comma promises another item: only while there is room for one.
    if (text[pos] !== ',' || count >= node.maxItems) return INVALID;
    pos = skipWhitespace(text, pos + 1);
    if (pos < 0) return pos;
    if (pos >= text.length) return END;
  }
}

function parseObject(node: Extract<SchemaNode, { kind: 'object' }>, text: string, pos: number): number {
  if (text[pos] !== '{') return INVALID;
  pos = skipWhitespace(text, pos + 1);
  if (pos < 0) return pos;
  if (pos >= text.length) return END;
  if (node.properties.length === 0) return text[pos] === '}' ? pos + 1 : INVALID;
  for (const [i, [name, sub]] of node.properties.entries()) {
    const key = JSON.stringify(name);
    const piece = text.slice(pos, pos + key.length);
    if (piece !== key) return key.startsWith(piece) && pos + piece.length >= text.length ? END : INVALID;
    pos = skipWhitespace(text, pos + key.length);
    if (pos < 0) return pos;
    if (pos >= text.length) return END;
    if (text[pos] !== ':') return INVALID;
    pos = skipWhitespace(text, pos + 1);
    if (pos < 0) return pos;
    pos = parseValue(sub, text, pos);
    if (pos < 0) return pos;
    pos = skipWhitespace(text, pos);
    if (pos < 0) return pos;
    if (pos >= text.length) return END;
    const last = i === node.properties.length - 1;
    if (text[pos] !== (last ? '}' : ',')) return INVALID;
    pos++;
    if (!last) {
      pos = skipWhitespace(text, pos);
      if (pos < 0) return pos;
      if (pos >= text.length) return END;
    }
  }
  return pos;
}

/** Any JSON value (json_object mode's values), nesting bounded. */
function parseAny(text: string, pos: number, depth: number): number {
  if (pos >= text.length) return END;
  if (depth > 8) return INVALID;
  const c = text[pos]!;
  if (c === '"') return parseString(text, pos, MAX_STRING);
  if (c === '{') {
    pos = skipWhitespace(text, pos + 1);
    if (pos < 0 || pos >= text.length) return pos < 0 ? pos : END;
    if (text[pos] === '}') return pos + 1;
    for (;;) {
      pos = parseString(text, pos, 200);
      if (pos < 0) return pos;
      pos = skipWhitespace(text, pos);
      if (pos < 0 || pos >= text.length) return pos < 0 ? pos : END;
      if (text[pos] !== ':') return INVALID;
      pos = skipWhitespace(text, pos + 1);
      if (pos < 0) return pos;
      pos = parseAny(text, pos, depth + 1);
      if (pos < 0) return pos;
      pos = skipWhitespace(text, pos);
      if (pos < 0 || pos >= text.length) return pos < 0 ? pos : END;
      if (text[pos] === '}') return pos + 1;
      if (text[pos] !== ',') return INVALID;
      pos = skipWhitespace(text, pos + 1);
      if (pos < 0 || pos >= text.length) return pos < 0 ? pos : END;
    }
  }
  if (c === '[') return parseArray({ kind: 'array', items: { kind: 'any' }, minItems: 0, maxItems: 1000 }, text, pos);
  if (c === '-' || (c >= '0' && c <= '9')) return parseNumber(text, pos, { kind: 'number', integer: false, minimum: -Infinity, maximum: Infinity });
  return parseLiteral(text, pos, ['true', 'false', 'null']);
}

/** Whether `text` is a prefix of a document `node` accepts, or such a document. */
export function referencePrefixStatus(node: SchemaNode, text: string): PrefixStatus {
  let pos = skipWhitespace(text, 0);
  if (pos < 0) return 'invalid';
  if (pos >= text.length) return 'partial';
  // json_object and schema roots must be objects (or the schema's own type).
  if (node.kind === 'any' && text[pos] !== '{') return 'invalid';
  pos = parseValue(node, text, pos);
  if (pos === INVALID) return 'invalid';
  if (pos === END) return 'partial';
  return text.slice(pos).trim() === '' ? 'complete' : 'invalid';
}
