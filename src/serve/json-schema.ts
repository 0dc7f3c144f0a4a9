// The JSON-schema subset structured outputs accept (`response_format` in `rank1 serve`), compiled to a small
// tree the checker walks (./json-constraint.ts), and the rules for single values that do not depend on how the
// text is read: when a number being written can still end in range, and when it is a finished number in range.
//
// The subset is the one strict structured outputs use: objects (properties emitted in the order declared, all
// required, no others), strings (maxLength, enum), integers and numbers (minimum, maximum, enum), booleans,
// null, arrays (items, minItems, maxItems), enum/const of any JSON literals. Whitespace between tokens is
// limited to one character per gap, so a model cannot stall in it; strings (maxLength, at most 2000), arrays
// (maxItems) and numbers are bounded, so every document can be finished.
//
// Nothing else is taken on trust: a keyword outside the subset (pattern, anyOf, $ref, minLength above 0, ...)
// would let a finished document fail the schema, a schema no document satisfies (minItems above maxItems, an
// empty enum, a required property that additionalProperties forbids) would leave the model with no token to
// write, and nesting past MAX_SCHEMA_DEPTH is refused before it can exhaust the stack. Each is a SchemaError
// naming the path, a 400 before any token in `rank1 serve`.

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

/** How deep schemas may nest (an object's properties and an array's items each count one level). */
export const MAX_SCHEMA_DEPTH = 32;

/** Why a schema is refused: `unsatisfiable` (no document satisfies it), `unsupported` (outside the subset), `too_deep`. */
export class SchemaError extends Error {
  constructor(readonly code: 'unsatisfiable_schema' | 'unsupported_schema' | 'schema_too_deep', message: string) {
    super(message);
  }
}

// Keywords that change nothing the constraint writes (annotations), and those it honours.
const ANNOTATIONS = ['title', 'description', '$schema', '$id', '$comment', 'default', 'examples', 'deprecated', 'readOnly', 'writeOnly'];
const HONOURED = ['type', 'enum', 'const', 'properties', 'required', 'additionalProperties', 'maxLength', 'minLength', 'minimum', 'maximum', 'items', 'minItems', 'maxItems'];
const KNOWN = new Set([...ANNOTATIONS, ...HONOURED]);

const unsupported = (at: string, what: string) => new SchemaError('unsupported_schema', `${at}: ${what}`);
const unsatisfiable = (at: string, why: string) => new SchemaError('unsatisfiable_schema', `${at}: ${why}, so no document satisfies the schema`);

/**
 * A JSON schema (the supported subset) as a checker's node. Refused with a SchemaError naming the path: a schema
 * no document satisfies (minItems above maxItems, an empty enum, `false`, ...), a keyword the constraint does
 * not honour (so a finished document could fail the schema), or nesting deeper than MAX_SCHEMA_DEPTH.
 */
export function compileSchema(schema: unknown, at = 'schema', depth = 0): SchemaNode {
  if (depth > MAX_SCHEMA_DEPTH) throw new SchemaError('schema_too_deep', `${at}: schemas may nest at most ${MAX_SCHEMA_DEPTH} levels deep`);
  if (schema === false) throw unsatisfiable(at, 'the schema is false');
  if (schema === true) return { kind: 'any' };
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw unsupported(at, 'expected a JSON schema object');
  const s = schema as Record<string, unknown>;
  const unknownKeyword = Object.keys(s).find((key) => !KNOWN.has(key));
  if (unknownKeyword !== undefined) throw unsupported(at, `keyword ${JSON.stringify(unknownKeyword)} is not supported (${HONOURED.join(', ')})`);
  if ('const' in s || 'enum' in s) return compileLiterals(s, at, depth);
  if (!('type' in s)) {
    if (Object.keys(s).some((key) => HONOURED.includes(key))) throw unsupported(at, 'a schema with constraints needs a "type"');
    return { kind: 'any' };
  }
  const type = s['type'];
  switch (type) {
    case 'object': return compileObject(s, at, depth);
    case 'string': return compileString(s, at);
    case 'integer':
    case 'number': return compileNumber(s, at, type === 'integer');
    case 'boolean': return { kind: 'boolean' };
    case 'null': return { kind: 'null' };
    case 'array': return compileArray(s, at, depth);
    default:
      throw unsupported(at, `type ${JSON.stringify(type)} is not supported (object, string, integer, number, boolean, null, array, enum, const)`);
  }
}

/** enum / const: the values that also satisfy the rest of the schema (its type, bounds, ...). */
function compileLiterals(s: Record<string, unknown>, at: string, depth: number): SchemaNode {
  const values = 'const' in s ? [s['const']] : s['enum'];
  if (!Array.isArray(values)) throw unsupported(`${at}.enum`, 'expected an array');
  if (values.length === 0) throw unsatisfiable(`${at}.enum`, 'must not be empty');
  const { enum: _enum, const: _const, ...rest } = s;
  const restNode = compileSchema(rest, at, depth);
  const texts = values.filter((value) => matchesNode(restNode, value)).map((value) => JSON.stringify(value));
  if (texts.length === 0) throw unsatisfiable(at, 'no value of enum/const satisfies the rest of the schema (as this server reads it)');
  return { kind: 'literals', texts };
}

function compileObject(s: Record<string, unknown>, at: string, depth: number): SchemaNode {
  const properties = s['properties'] ?? {};
  if (typeof properties !== 'object' || properties === null || Array.isArray(properties)) throw unsupported(`${at}.properties`, 'expected an object');
  const required = s['required'] ?? [];
  if (!Array.isArray(required) || required.some((name) => typeof name !== 'string')) throw unsupported(`${at}.required`, 'expected an array of property names');
  // Every declared property is written, and only those: a required one that is not declared cannot be.
  for (const name of required as string[]) {
    if (Object.hasOwn(properties, name)) continue;
    if (s['additionalProperties'] === false) throw unsatisfiable(`${at}.required`, `"${name}" is required but not in properties, and additionalProperties is false`);
    throw unsupported(`${at}.required`, `"${name}" is required but not in properties (only declared properties are written)`);
  }
  const entries = Object.entries(properties as Record<string, unknown>);
  return { kind: 'object', properties: entries.map(([name, sub]) => [name, compileSchema(sub, `${at}.properties.${name}`, depth + 1)]) };
}

/** A keyword's value: a whole number at least 0, or `fallback` when absent. */
function count(s: Record<string, unknown>, key: string, at: string, fallback: number): number {
  const value = s[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) throw unsupported(`${at}.${key}`, 'expected a whole number, at least 0');
  return value;
}

function compileString(s: Record<string, unknown>, at: string): SchemaNode {
  const maxLength = count(s, 'maxLength', at, MAX_STRING);
  const minLength = count(s, 'minLength', at, 0);
  if (minLength > maxLength) throw unsatisfiable(at, `minLength ${minLength} is above maxLength ${maxLength}`);
  if (minLength > 0) throw unsupported(`${at}.minLength`, 'only 0 is supported');
  return { kind: 'string', maxLength: Math.min(MAX_STRING, maxLength) };
}

function compileNumber(s: Record<string, unknown>, at: string, integer: boolean): NumberNode {
  const bound = (key: string, fallback: number) => {
    const value = s[key] ?? fallback;
    if (typeof value !== 'number' || !Number.isFinite(value)) throw unsupported(`${at}.${key}`, 'expected a finite number');
    if (Math.abs(value) > Number.MAX_SAFE_INTEGER) throw unsupported(`${at}.${key}`, `bounds beyond ±${Number.MAX_SAFE_INTEGER} are not supported`);
    return value;
  };
  const minimum = bound('minimum', -Number.MAX_SAFE_INTEGER);
  const maximum = bound('maximum', Number.MAX_SAFE_INTEGER);
  if (minimum > maximum) throw unsatisfiable(at, `minimum ${minimum} is above maximum ${maximum}`);
  if (integer && Math.ceil(minimum) > Math.floor(maximum)) throw unsatisfiable(at, `no integer lies between minimum ${minimum} and maximum ${maximum}`);
  return { kind: 'number', integer, minimum, maximum };
}

function compileArray(s: Record<string, unknown>, at: string, depth: number): SchemaNode {
  const minItems = count(s, 'minItems', at, 0);
  const maxItems = count(s, 'maxItems', at, ANY_MAX_ITEMS);
  if (minItems > maxItems) throw unsatisfiable(at, `minItems ${minItems} is above maxItems ${maxItems}${'maxItems' in s ? '' : ` (the limit when maxItems is absent)`}`);
  return { kind: 'array', items: compileSchema(s['items'] ?? {}, `${at}.items`, depth + 1), minItems, maxItems };
}

/** Whether a JSON value is a document `node` accepts (the same rule the checker applies to text). */
export function matchesNode(node: SchemaNode, value: unknown): boolean {
  switch (node.kind) {
    case 'any': return true;
    case 'string': return typeof value === 'string' && value.length <= node.maxLength;
    case 'number': return typeof value === 'number' && (!node.integer || Number.isInteger(value)) && value >= node.minimum && value <= node.maximum;
    case 'boolean': return typeof value === 'boolean';
    case 'null': return value === null;
    case 'literals': return node.texts.includes(JSON.stringify(value));
    case 'array': return Array.isArray(value) && value.length >= node.minItems && value.length <= node.maxItems && value.every((v) => matchesNode(node.items, v));
    case 'object': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
      const keys = Object.keys(value);
      return keys.length === node.properties.length && node.properties.every(([name, sub]) => keys.includes(name) && matchesNode(sub, (value as Record<string, unknown>)[name]));
    }
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
