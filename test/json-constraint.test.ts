// Structured outputs' checker (src/serve/json-constraint.ts): random walks over random schemas never reach a
// dead end (a valid prefix always has a valid next character), and every document it calls complete parses
// and satisfies the schema; the incremental state gives, piece by piece, the verdict of the recursive-descent
// check of the whole text it replaced (test/helpers/json-prefix-reference.ts); plus the cases that once were
// dead ends.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { JsonConstraintState, prefixStatus } from '../src/serve/json-constraint.ts';
import { compileSchema, type SchemaNode } from '../src/serve/json-schema.ts';
import { Random } from '../src/tensor/random.ts';
import { referencePrefixStatus } from './helpers/json-prefix-reference.ts';

const leaf = fc.oneof(
  fc.record({ type: fc.constant('string'), maxLength: fc.integer({ min: 0, max: 6 }) }),
  fc.record({ type: fc.constant('integer'), minimum: fc.integer({ min: -30, max: 30 }), span: fc.integer({ min: 0, max: 200 }) }).map(({ minimum, span }) => ({ type: 'integer', minimum, maximum: minimum + span })),
  fc.constant({ type: 'boolean' }),
  fc.constant({ type: 'null' }),
  fc.array(fc.oneof(fc.integer({ min: 0, max: 130 }), fc.constantFrom('a', 'ab', 'b c')), { minLength: 1, maxLength: 4 }).map((values) => ({ enum: [...new Set(values)] })),
);
function schemaArbitrary(leaves: fc.Arbitrary<unknown>): fc.Arbitrary<Record<string, unknown>> {
  return fc.letrec((tie) => ({
    node: fc.oneof({ depthSize: 'small' }, leaves, tie('array'), tie('object')),
    array: fc.record({ items: tie('node'), minItems: fc.integer({ min: 0, max: 2 }), extra: fc.integer({ min: 0, max: 3 }) })
      .map(({ items, minItems, extra }) => ({ type: 'array', items, minItems, maxItems: minItems + extra })),
    object: fc.uniqueArray(fc.tuple(fc.constantFrom('a', 'bb', 'k', 'x y'), tie('node')), { selector: ([name]) => name, minLength: 0, maxLength: 3 })
      .map((entries) => ({ type: 'object', properties: Object.fromEntries(entries) })),
  })).object as fc.Arbitrary<Record<string, unknown>>;
}
const schemaArb = schemaArbitrary(leaf);
// For comparing the two checkers: also floats, literals that are prefixes of others (1, 12, 1.5, 1e+21),
// literals of every JSON type, and json_object's any-value ({}), at the root too.
const wideLeaf = fc.oneof(
  leaf,
  fc.record({ type: fc.constant('number'), minimum: fc.integer({ min: -20, max: 5 }), maximum: fc.integer({ min: 5, max: 300 }) }),
  fc.subarray([1, 12, 120, 1.5, -1, 0, 1e21, 'x', '1', true, false, null, { a: 1 }, [1, 2]], { minLength: 1 }).map((values) => ({ enum: values })),
  fc.constant({}),
);
const wideSchemaArb: fc.Arbitrary<unknown> = fc.oneof(schemaArbitrary(wideLeaf), fc.constant({}), wideLeaf);

function satisfies(node: SchemaNode, value: unknown): boolean {
  switch (node.kind) {
    case 'any': return true;
    case 'string': return typeof value === 'string' && value.length <= node.maxLength;
    case 'number': return typeof value === 'number' && (!node.integer || Number.isInteger(value)) && value >= node.minimum && value <= node.maximum;
    case 'boolean': return typeof value === 'boolean';
    case 'null': return value === null;
    case 'literals': return node.texts.includes(JSON.stringify(value));
    case 'array': return Array.isArray(value) && value.length >= node.minItems && value.length <= node.maxItems && value.every((v) => satisfies(node.items, v));
    case 'object': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
      const keys = Object.keys(value);
      return keys.length === node.properties.length && node.properties.every(([name, sub], i) => keys[i] === name && satisfies(sub, (value as Record<string, unknown>)[name]));
    }
  }
}

function alphabetOf(schema: unknown): string[] {
  const chars = new Set('{}[]",:-0123456789 \ntruefalsn\\u'.split(''));
  for (const c of JSON.stringify(schema)) chars.add(c);
  return [...chars];
}

/** Characters the checkers treat differently: escapes, exponents, control characters, whitespace beyond the set. */
const EXTRA_CHARACTERS = ['.', 'e', 'E', '+', 'F', 'x', '/', '\\', '\t', '\r', '\u0001', '\u00a0', '\u2028', ']', '}'];

/** A piece of 1–4 characters, each mostly one that keeps `text` a valid prefix, now and then any character. */
function randomPiece(node: SchemaNode, text: string, alphabet: readonly string[], rng: Random): string {
  let piece = '';
  for (let length = 1 + rng.int(4); piece.length < length;) {
    const valid = alphabet.filter((ch) => referencePrefixStatus(node, text + piece + ch) !== 'invalid');
    const pool = valid.length && rng.uniform() < 0.7 ? valid : alphabet;
    piece += pool[rng.int(pool.length)]!;
  }
  return piece;
}

describe('structured outputs: the JSON prefix checker', () => {
  it('random walks never reach a dead end, and completed documents parse and satisfy the schema (fast-check)', () => {
    let completed = 0;
    fc.assert(fc.property(schemaArb, fc.integer({ min: 0, max: 2 ** 30 }), (schema, seed) => {
      const node = compileSchema(schema);
      const alphabet = alphabetOf(schema);
      const rng = new Random(seed);
      const state = new JsonConstraintState(node);
      let text = '';
      for (let step = 0; step < 300; step++) {
        const status = state.status;
        expect(status, JSON.stringify(text)).not.toBe('invalid');
        if (status === 'complete') {
          const value = JSON.parse(text) as unknown;
          expect(satisfies(node, value), `${text} for ${JSON.stringify(schema)}`).toBe(true);
          completed++;
          return;
        }
        const next = alphabet.filter((c) => state.statusWith(c) !== 'invalid');
        expect(next.length, `dead end after ${JSON.stringify(text)} for ${JSON.stringify(schema)}`).toBeGreaterThan(0);
        // Prefer characters that close things, so most walks finish.
        const closers = next.filter((c) => '"]}'.includes(c) || /[0-9]/.test(c));
        const pool = closers.length && rng.uniform() < 0.6 ? closers : next;
        const char = pool[rng.int(pool.length)]!;
        text += char;
        state.accept(char);
      }
    }), { numRuns: 300, seed: 3 });
    expect(completed).toBeGreaterThan(200);
  });

  it('the incremental state gives the verdict of a from-scratch parse, for the accepted text and every candidate piece (fast-check)', () => {
    const seen = new Map<string, number>();
    let checks = 0;
    let throughInvalid = 0;
    fc.assert(fc.property(wideSchemaArb, fc.integer({ min: 0, max: 2 ** 30 }), (schema, seed) => {
      const node = compileSchema(schema);
      const alphabet = [...new Set([...alphabetOf(schema), ...EXTRA_CHARACTERS])];
      const rng = new Random(seed);
      const state = new JsonConstraintState(node);
      let text = '';
      for (let step = 0; step < 50; step++) {
        const piece = randomPiece(node, text, alphabet, rng);
        // Candidates: the piece, and others a check must leave the state unmoved by.
        for (const candidate of [piece, alphabet[rng.int(alphabet.length)]!, piece.slice(0, 1) + alphabet[rng.int(alphabet.length)]!]) {
          const want = referencePrefixStatus(node, text + candidate);
          expect(state.statusWith(candidate), `${JSON.stringify(text)} + ${JSON.stringify(candidate)} for ${JSON.stringify(schema)}`).toBe(want);
          seen.set(want, (seen.get(want) ?? 0) + 1);
          checks++;
        }
        // Accept valid pieces (now and then an invalid one: what follows must stay as the reference says).
        if (referencePrefixStatus(node, text + piece) === 'invalid' && rng.uniform() > 0.03) continue;
        // A valid piece through an invalid prefix (6 then . with maximum 5): the state must not have died.
        if ([...piece].some((_, i) => referencePrefixStatus(node, text + piece.slice(0, i + 1)) === 'invalid')) throughInvalid++;
        text += piece;
        const want = referencePrefixStatus(node, text);
        expect(state.accept(piece), `${JSON.stringify(text)} for ${JSON.stringify(schema)}`).toBe(want);
        expect(state.status).toBe(want);
        expect(prefixStatus(node, text)).toBe(want);
        if (want === 'complete' && rng.uniform() < 0.5) return;
      }
    }), { numRuns: 400, seed: 11 });
    expect(checks).toBeGreaterThan(20_000);
    for (const verdict of ['complete', 'invalid', 'partial']) expect(seen.get(verdict) ?? 0, verdict).toBeGreaterThan(500);
    expect(throughInvalid).toBeGreaterThan(20);
  });

  it('agrees with the from-scratch parse where random walks seldom go: deep json_object nesting, full arrays, number literals', () => {
    const agree = (node: SchemaNode, text: string) => {
      const state = new JsonConstraintState(node);
      for (let i = 0; i < text.length; i++) expect(state.accept(text[i]!), JSON.stringify(text.slice(0, i + 1))).toBe(referencePrefixStatus(node, text.slice(0, i + 1)));
      return state.status;
    };
    const any = compileSchema({});
    // The root object's values are at depth 1; a value deeper than 8 is refused (arrays start the count again).
    expect(agree(any, '{"a":'.repeat(8) + '1' + '}'.repeat(8))).toBe('complete');
    expect(agree(any, '{"a":'.repeat(9))).toBe('partial');
    expect(agree(any, '{"a":'.repeat(9) + '1')).toBe('invalid');
    expect(agree(any, '{"a":'.repeat(8) + '[' + '{"a":'.repeat(8) + '1' + '}'.repeat(8) + ']' + '}'.repeat(8))).toBe('complete');
    const pair = compileSchema({ type: 'array', items: { type: 'integer' }, maxItems: 2 });
    expect(agree(pair, '[1,2,')).toBe('invalid');
    expect(agree(pair, '[1, 2]')).toBe('complete');
    const numbers = compileSchema({ type: 'object', properties: { n: { enum: [1, 1.5, 12, 1e21] } } });
    expect(agree(numbers, '{"n":1.')).toBe('partial');
    expect(agree(numbers, '{"n":1.5}')).toBe('complete');
    expect(agree(numbers, '{"n":1e+2')).toBe('partial');
    expect(agree(numbers, '{"n":1e+21 }')).toBe('complete');
    expect(agree(numbers, '{"n":13')).toBe('invalid');
    // At the root a whole literal is a complete document, unless a longer literal goes on from it.
    const root = compileSchema({ enum: [1, 12, 'a'] });
    expect(agree(root, '1')).toBe('partial');
    expect(agree(root, '12')).toBe('complete');
    expect(agree(root, '"a"')).toBe('complete');
    const bounded = compileSchema({ type: 'number', maximum: 5 });
    expect(agree(bounded, '6')).toBe('invalid');
    expect(agree(bounded, '6.')).toBe('partial');
    expect(agree(bounded, '4.5 ')).toBe('complete');
  });

  it('closes a full string and a full array instead of stalling (the former dead ends)', () => {
    const array = compileSchema({ type: 'object', properties: { activating: { type: 'array', maxItems: 2, items: { type: 'integer', minimum: 1, maximum: 6 } } } });
    expect(prefixStatus(array, '{"activating":[1,2,')).toBe('invalid');
    expect(prefixStatus(array, '{"activating":[1,2]}')).toBe('complete');
    expect(prefixStatus(array, '{"activating":[7')).toBe('invalid');
    expect(prefixStatus(array, '{"activating":[0')).toBe('invalid');
    expect(prefixStatus(array, '{"activating":[-')).toBe('invalid');
    const text = compileSchema({ type: 'object', properties: { e: { type: 'string', maxLength: 2 } } });
    expect(prefixStatus(text, '{"e":"ab\\u')).toBe('invalid');
    expect(prefixStatus(text, '{"e":"a\\u00')).toBe('partial');
    expect(prefixStatus(text, '{"e":"ab"}')).toBe('complete');
    const range = compileSchema({ type: 'object', properties: { n: { type: 'integer', minimum: 10, maximum: 12 } } });
    expect(prefixStatus(range, '{"n":2')).toBe('invalid');
    expect(prefixStatus(range, '{"n":1')).toBe('partial');
    expect(prefixStatus(range, '{"n":13')).toBe('invalid');
    const literals = compileSchema({ type: 'object', properties: { c: { enum: [1, 12] } } });
    expect(prefixStatus(literals, '{"c":1')).toBe('partial');
    expect(prefixStatus(literals, '{"c":12}')).toBe('complete');
    expect(prefixStatus(literals, '{"c":13')).toBe('invalid');
  });

  it('names what it cannot compile', () => {
    expect(() => compileSchema({ type: 'object', properties: { a: { type: 'date' } } })).toThrow(/schema.properties.a: type "date" is not supported/);
    expect(() => compileSchema({ enum: [] })).toThrow(/enum: must not be empty/);
  });
});
