// Structured outputs in `rank1 serve` refuse what they cannot keep (issue 20, must 4): a schema no document
// satisfies, one using keywords the constraint does not honour, one nested past MAX_SCHEMA_DEPTH, or `schema: []`
// is a 400 naming the problem before any token is generated; and a constrained answer is only reported
// complete (`finish_reason: "stop"`) when its text is a whole document the schema accepts.
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { loadChatTemplate } from '../src/model/chat-template.ts';
import { loadQwen2Checkpoint } from '../src/model/load.ts';
import type { Qwen2Model } from '../src/model/qwen2.ts';
import { loadTokenizer } from '../src/model/tokenizer.ts';
import { RequestDecoding } from '../src/serve/decoding.ts';
import { compileSchema, matchesNode, MAX_SCHEMA_DEPTH } from '../src/serve/json-schema.ts';
import { DecodeScheduler } from '../src/serve/scheduler.ts';
import { buildServer } from '../src/serve/server.ts';
import { createServing } from '../src/serve/serving.ts';

const toy = path.resolve(import.meta.dirname, '..', 'models/toy');

describe('rank1 serve: structured outputs refuse schemas they cannot keep', () => {
  let model: Qwen2Model;
  let app: FastifyInstance;
  let scheduler: DecodeScheduler;
  let generatedSteps = 0;

  beforeAll(async () => {
    ({ model } = await loadQwen2Checkpoint(toy, getCpuBackend()));
    scheduler = new DecodeScheduler(model, {});
    // Counts every submission: a refused schema must never reach the scheduler.
    const submit = scheduler.submit.bind(scheduler);
    scheduler.submit = (request) => {
      generatedSteps++;
      return submit(request);
    };
    app = buildServer({ scheduler, tokenizer: (await loadTokenizer(toy))!, chatTemplate: await loadChatTemplate(toy), modelId: 'toy', contextLength: 1024, bodyLimit: 2 ** 22 });
  });
  afterAll(async () => {
    await app?.close();
    model?.dispose();
  });

  /** The completion of a request with `schema` (a JSON text as it is, too deep for JSON.stringify). */
  async function complete(schema: unknown, maxTokens = 200) {
    const schemaText = schema instanceof RawJson ? schema.text : JSON.stringify(schema);
    const response = await app.inject({
      method: 'POST', url: '/v1/chat/completions', headers: { 'content-type': 'application/json' },
      payload: `{"model":"toy","messages":[{"role":"user","content":"Give me JSON."}],"max_tokens":${maxTokens},"temperature":0,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":${schemaText}}}}`,
    });
    return { status: response.statusCode, body: response.json() as { error?: { message: string; type: string; param: string; code: string }; choices?: { message: { content: string }; finish_reason: string }[] } };
  }

  const refusals: [string, unknown, string, RegExp][] = [
    ['minItems above maxItems', { type: 'array', items: { type: 'integer' }, minItems: 5, maxItems: 2 }, 'unsatisfiable_schema', /minItems 5 is above maxItems 2/],
    ['minimum above maximum', { type: 'object', properties: { n: { type: 'integer', minimum: 5, maximum: 3 } } }, 'unsatisfiable_schema', /properties\.n: minimum 5 is above maximum 3/],
    ['no integer in range', { type: 'integer', minimum: 0.2, maximum: 0.8 }, 'unsatisfiable_schema', /no integer lies between/],
    ['minLength above maxLength', { type: 'string', minLength: 5, maxLength: 2 }, 'unsatisfiable_schema', /minLength 5 is above maxLength 2/],
    ['an empty enum', { type: 'object', properties: { c: { enum: [] } } }, 'unsatisfiable_schema', /properties\.c\.enum: must not be empty/],
    ['an enum no value of which has the type', { type: 'string', enum: [1, 2] }, 'unsatisfiable_schema', /no value of enum/],
    ['a required property additionalProperties forbids', { type: 'object', properties: { a: { type: 'string' } }, required: ['a', 'b'], additionalProperties: false }, 'unsatisfiable_schema', /"b" is required but not in properties, and additionalProperties is false/],
    ['the schema false', { type: 'object', properties: { a: false } }, 'unsatisfiable_schema', /properties\.a: the schema is false/],
    ['a keyword the constraint does not honour', { type: 'string', pattern: '^[a-z]+$' }, 'unsupported_schema', /keyword "pattern" is not supported/],
    ['anyOf', { anyOf: [{ type: 'string' }, { type: 'null' }] }, 'unsupported_schema', /keyword "anyOf" is not supported/],
    ['a required property that is not declared', { type: 'object', properties: {}, required: ['a'] }, 'unsupported_schema', /"a" is required but not in properties/],
    ['a minLength the constraint cannot keep', { type: 'string', minLength: 3 }, 'unsupported_schema', /minLength: only 0 is supported/],
    ['schema: []', [], 'unsupported_schema', /expected a JSON schema object/],
    ['a 10 000-deep schema', new RawJson('{"type":"array","items":'.repeat(10_000) + '{"type":"null"}' + '}'.repeat(10_000)), 'schema_too_deep', new RegExp(`at most ${MAX_SCHEMA_DEPTH} levels`)],
  ];

  it.each(refusals)('%s is a 400 naming the problem, before any token', async (_name, schema, code, message) => {
    const before = generatedSteps;
    const { status, body } = await complete(schema);
    expect(status).toBe(400);
    expect(body.error).toMatchObject({ type: 'invalid_request_error', param: 'response_format', code });
    expect(body.error!.message).toMatch(message);
    expect(body.error!.message).toMatch(/^response_format\.json_schema\.schema/);
    expect(generatedSteps).toBe(before);
  });

  it('accepts a schema exactly at the depth limit, and annotations; the answer validates when "stop"', async () => {
    const { status, body } = await complete(deepSchema(MAX_SCHEMA_DEPTH));
    expect(status).toBe(200);
    const node = compileSchema(deepSchema(MAX_SCHEMA_DEPTH));
    const choice = body.choices![0]!;
    if (choice.finish_reason === 'stop') expect(matchesNode(node, JSON.parse(choice.message.content))).toBe(true);
    const annotated = { type: 'object', title: 'T', description: 'd', properties: { a: { type: 'boolean', description: 'flag' } }, required: ['a'], additionalProperties: false };
    const answer = await complete(annotated);
    expect(answer.status).toBe(200);
    expect(answer.body.choices![0]!.finish_reason).toBe('stop');
    expect(typeof (JSON.parse(answer.body.choices![0]!.message.content) as { a: unknown }).a).toBe('boolean');
  });

  it('a constrained answer cut by max_tokens is "length", never "stop"', async () => {
    const { status, body } = await complete({ type: 'object', properties: { text: { type: 'string', maxLength: 500 } } }, 3);
    expect(status).toBe(200);
    expect(body.choices![0]!.finish_reason).toBe('length');
    expect(() => JSON.parse(body.choices![0]!.message.content)).toThrow();
  });

  it('a constrained decoding that ends without a whole document (no token could continue it) is not "stop"', async () => {
    const serving = createServing({ scheduler, tokenizer: (await loadTokenizer(toy))!, chatTemplate: '', modelId: 'toy', contextLength: 1024 });
    const request = { id: 'x', promptIds: [1], maxTokens: 10, temperature: 0, topP: 1, seed: 0, stops: [], schema: compileSchema({ type: 'object', properties: { a: { type: 'integer' } } }), stream: false, includeUsage: false };
    const decoding = new RequestDecoding(request, serving);
    expect(decoding.finishReason({ ids: [], stopReason: 'stopped_by_caller' } as never)).toBe('length');
    const free = new RequestDecoding({ ...request, schema: null }, serving);
    expect(free.finishReason({ ids: [], stopReason: 'stopped_by_caller' } as never)).toBe('stop');
  });
});

class RawJson {
  constructor(readonly text: string) {}
}

/** Arrays of arrays, `depth` levels below the root, integers at the bottom. */
function deepSchema(depth: number): unknown {
  let schema: unknown = { type: 'integer', minimum: 0, maximum: 9 };
  for (let i = 0; i < depth; i++) schema = { type: 'array', items: schema, maxItems: 1 };
  return schema;
}
