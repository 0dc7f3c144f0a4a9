// Structured outputs' checker (src/serve/json-constraint.ts): random walks over random schemas never reach a
// dead end (a valid prefix always has a valid next character), and every document it calls complete parses
// and satisfies the schema; plus the cases that once were dead ends.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileSchema, prefixStatus, type SchemaNode } from '../src/serve/json-constraint.ts';
import { Random } from '../src/tensor/random.ts';

const leaf = fc.oneof(
  fc.record({ type: fc.constant('string'), maxLength: fc.integer({ min: 0, max: 6 }) }),
  fc.record({ type: fc.constant('integer'), minimum: fc.integer({ min: -30, max: 30 }), span: fc.integer({ min: 0, max: 200 }) }).map(({ minimum, span }) => ({ type: 'integer', minimum, maximum: minimum + span })),
  fc.constant({ type: 'boolean' }),
  fc.constant({ type: 'null' }),
  fc.array(fc.oneof(fc.integer({ min: 0, max: 130 }), fc.constantFrom('a', 'ab', 'b c')), { minLength: 1, maxLength: 4 }).map((values) => ({ enum: [...new Set(values)] })),
);
const schemaArb: fc.Arbitrary<Record<string, unknown>> = fc.letrec((tie) => ({
  node: fc.oneof({ depthSize: 'small' }, leaf, tie('array'), tie('object')),
  array: fc.record({ items: tie('node'), minItems: fc.integer({ min: 0, max: 2 }), extra: fc.integer({ min: 0, max: 3 }) })
    .map(({ items, minItems, extra }) => ({ type: 'array', items, minItems, maxItems: minItems + extra })),
  object: fc.uniqueArray(fc.tuple(fc.constantFrom('a', 'bb', 'k', 'x y'), tie('node')), { selector: ([name]) => name, minLength: 0, maxLength: 3 })
    .map((entries) => ({ type: 'object', properties: Object.fromEntries(entries) })),
})).object as fc.Arbitrary<Record<string, unknown>>;

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

describe('structured outputs: the JSON prefix checker', () => {
  it('random walks never reach a dead end, and completed documents parse and satisfy the schema (fast-check)', () => {
    let completed = 0;
    fc.assert(fc.property(schemaArb, fc.integer({ min: 0, max: 2 ** 30 }), (schema, seed) => {
      const node = compileSchema(schema);
      const alphabet = alphabetOf(schema);
      const rng = new Random(seed);
      let text = '';
      for (let step = 0; step < 300; step++) {
        const status = prefixStatus(node, text);
        expect(status, JSON.stringify(text)).not.toBe('invalid');
        if (status === 'complete') {
          const value = JSON.parse(text) as unknown;
          expect(satisfies(node, value), `${text} for ${JSON.stringify(schema)}`).toBe(true);
          completed++;
          return;
        }
        const next = alphabet.filter((c) => prefixStatus(node, text + c) !== 'invalid');
        expect(next.length, `dead end after ${JSON.stringify(text)} for ${JSON.stringify(schema)}`).toBeGreaterThan(0);
        // Prefer characters that close things, so most walks finish.
        const closers = next.filter((c) => '"]}'.includes(c) || /[0-9]/.test(c));
        const pool = closers.length && rng.uniform() < 0.6 ? closers : next;
        text += pool[rng.int(pool.length)]!;
      }
    }), { numRuns: 300, seed: 3 });
    expect(completed).toBeGreaterThan(200);
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
