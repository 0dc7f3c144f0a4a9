// The JSON-schema subset structured outputs accept (`response_format` in `rank1 serve`), compiled to a small
// tree the checker walks (./json-constraint.ts), and the rules for single values that do not depend on how the
// text is read: when a number being written can still end in range, and when it is a finished number in range.
//
// The subset is the one strict structured outputs use: objects (properties emitted in the order declared, all
// required, no others), strings (maxLength, enum), integers and numbers (minimum, maximum, enum), booleans,
// null, arrays (items, minItems, maxItems), enum/const of any JSON literals. Whitespace between tokens is
// limited to one character per gap, so a model cannot stall in it; strings (maxLength, at most 2000), arrays
// (maxItems) and numbers are bounded, so every document can be finished.

export type SchemaNode =
  | { kind: 'object'; properties: [string, SchemaNode][] }
  | { kind: 'string'; maxLength: number }
  | { kind: 'number'; integer: boolean; minimum: number; maximum: number }
  | { kind: 'boolean' }
  | { kind: 'null' }
  | { kind: 'array'; items: SchemaNode; minItems: number; maxItems: number }
  | { kind: 'literals'; texts: string[] }
  | { kind: 'any' };

export type PrefixStatus = 'invalid' | 'partial' | 'complete';

/** Longest string (in UTF-16 units) a schema string may hold; also json_object's strings. */
export const MAX_STRING = 2000;
/** Whitespace characters allowed in one gap between tokens. */
export const MAX_WHITESPACE = 1;
/** Longest number text: past it a number cannot be valid, so a model cannot stall in digits. */
export const MAX_NUMBER_CHARS = 24;
/** json_object's limits: keys' length, nesting depth (a value deeper than this is refused), array length. */
export const ANY_KEY_LENGTH = 200;
export const ANY_MAX_DEPTH = 8;
export const ANY_MAX_ITEMS = 1000;

/** A JSON schema (the supported subset) as a checker's node; anything else is an error naming the path. */
export function compileSchema(schema: unknown, at = 'schema'): SchemaNode {
  if (schema === true || (typeof schema === 'object' && schema !== null && Object.keys(schema).length === 0)) return { kind: 'any' };
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw new Error(`${at}: expected a JSON schema object`);
  const s = schema as Record<string, unknown>;
  if ('const' in s) return { kind: 'literals', texts: [JSON.stringify(s['const'])] };
  if (Array.isArray(s['enum'])) {
    if (s['enum'].length === 0) throw new Error(`${at}.enum: must not be empty`);
    return { kind: 'literals', texts: s['enum'].map((v) => JSON.stringify(v)) };
  }
  const type = s['type'];
  switch (type) {
    case 'object': {
      const properties = (s['properties'] ?? {}) as Record<string, unknown>;
      if (typeof properties !== 'object' || Array.isArray(properties)) throw new Error(`${at}.properties: expected an object`);
      return { kind: 'object', properties: Object.entries(properties).map(([name, sub]) => [name, compileSchema(sub, `${at}.properties.${name}`)]) };
    }
    case 'string':
      return { kind: 'string', maxLength: Math.min(MAX_STRING, typeof s['maxLength'] === 'number' ? s['maxLength'] : MAX_STRING) };
    case 'integer':
    case 'number':
      return {
        kind: 'number', integer: type === 'integer',
        minimum: typeof s['minimum'] === 'number' ? s['minimum'] : -Number.MAX_SAFE_INTEGER,
        maximum: typeof s['maximum'] === 'number' ? s['maximum'] : Number.MAX_SAFE_INTEGER,
      };
    case 'boolean':
      return { kind: 'boolean' };
    case 'null':
      return { kind: 'null' };
    case 'array':
      return {
        kind: 'array', items: compileSchema(s['items'] ?? {}, `${at}.items`),
        minItems: typeof s['minItems'] === 'number' ? s['minItems'] : 0,
        maxItems: typeof s['maxItems'] === 'number' ? s['maxItems'] : 1000,
      };
    default:
      throw new Error(`${at}: type ${JSON.stringify(type)} is not supported (object, string, integer, number, boolean, null, array, enum, const)`);
  }
}

/** `{"type": "json_object"}`: any JSON object. */
export const ANY_OBJECT: SchemaNode = { kind: 'any' };

export type NumberNode = Extract<SchemaNode, { kind: 'number' }>;

/** json_object's numbers and arrays: any finite-or-not number, any items up to ANY_MAX_ITEMS. */
export const ANY_NUMBER: NumberNode = { kind: 'number', integer: false, minimum: -Infinity, maximum: Infinity };
export const ANY_ARRAY: SchemaNode = { kind: 'array', items: { kind: 'any' }, minItems: 0, maxItems: ANY_MAX_ITEMS };

/** Characters a number's text is read from (the run ends at the first other character). */
export const NUMBER_CHAR = /[-+0-9.eE]/;
const INTEGER = /^-?(0|[1-9][0-9]*)$/;
const NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$/;
const INTEGER_PREFIX = /^-?(0|[1-9][0-9]*)?$/;
const NUMBER_PREFIX = /^-?((0|[1-9][0-9]*)(\.[0-9]*)?([eE][-+]?[0-9]*)?)?$/;

/** Whether `body` (a run of number characters, followed by something else) is a number `node` accepts. */
export function isAcceptedNumber(body: string, node: NumberNode): boolean {
  if (!(node.integer ? INTEGER : NUMBER).test(body)) return false;
  const value = Number(body);
  return value >= node.minimum && value <= node.maximum;
}

/**
 * Whether `body` (a run of number characters at the end of the text, still being written) can end up a number
 * `node` accepts: 12 may grow to 120, but with maximum 6 it may not.
 */
export function canGrowIntoNumber(body: string, node: NumberNode): boolean {
  if (!(node.integer ? INTEGER_PREFIX : NUMBER_PREFIX).test(body)) return false;
  if (node.integer) return integerCanReach(body, node.minimum, node.maximum);
  const value = Number(body);
  if (body === '-') return node.minimum < 0;
  if (Number.isFinite(value) && value > node.maximum && value >= 0 && !/[.eE]/.test(body)) return false;
  if (Number.isFinite(value) && value < node.minimum && value <= 0 && !/[.eE]/.test(body)) return false;
  return true;
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
