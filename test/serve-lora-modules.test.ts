// `rank1 serve --lora-modules NAME=DIR …` (vLLM's flag): the base under its own name and each rank-1 adapter
// under its name, on one server; requests of different adapters decode in the same step (per-row adapters,
// ForwardOptions.adapterRows) and each equals rank1's generate with that adapter installed, token for token.
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { tensor } from '../src/tensor/ops.ts';
import { loadQwen2Checkpoint, readPeftAdapter, savePeftAdapter } from '../src/model/load.ts';
import { generate, generateBatch } from '../src/model/generate.ts';
import type { LoraAdapters } from '../src/model/lora.ts';
import type { Qwen2Model } from '../src/model/qwen2.ts';
import { randomRankOneAdapters } from '../src/model/random-model.ts';
import { loadTokenizer, type Tokenizer } from '../src/model/tokenizer.ts';
import { DecodeScheduler } from '../src/serve/scheduler.ts';
import { parseLoraModule } from '../src/serve/lora-modules.ts';
import { startServeProcess } from './helpers/serve-process.ts';

const toy = path.resolve(import.meta.dirname, '..', 'models/toy');
const backend = getCpuBackend();

describe('rank1 serve --lora-modules', () => {
  let model: Qwen2Model;
  let tokenizer: Tokenizer;
  let dir: string;
  let one: LoraAdapters;
  let two: LoraAdapters;
  const prompts = ['What is 2 + 2?', 'Name a prime number.', 'Count to five.'];
  let promptIds: number[][];

  beforeAll(async () => {
    ({ model } = await loadQwen2Checkpoint(toy, backend));
    tokenizer = (await loadTokenizer(toy))!;
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-lora-modules-'));
    // B large enough that each adapter changes the greedy text.
    await savePeftAdapter(path.join(dir, 'one'), randomRankOneAdapters(model.dims, 11, backend, 0.5));
    await savePeftAdapter(path.join(dir, 'two'), randomRankOneAdapters(model.dims, 12, backend, 0.5));
    one = await readPeftAdapter(path.join(dir, 'one'), model);
    two = await readPeftAdapter(path.join(dir, 'two'), model);
    promptIds = prompts.map((p) => tokenizer.encode(p, { addSpecialTokens: false }));
  });
  afterAll(async () => {
    one?.dispose();
    two?.dispose();
    model?.dispose();
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** generate with `adapters` installed as model.adapters (null: the base). */
  async function installed(adapters: LoraAdapters | null, ids: readonly number[], maxTokens: number): Promise<number[]> {
    const saved = model.adapters;
    model.adapters = adapters;
    try {
      return (await generate(model, ids, { maxTokens, stopIds: tokenizer.stopIds() })).ids;
    } finally {
      model.adapters = saved;
    }
  }

  it('a mixed batch forward equals, row for row, the same batch run with that row\'s adapter installed, bit for bit', async () => {
    const ids = tensor(Int32Array.from([5, 9, 5, 17]), [4, 1], { backend, dtype: 'i32' });
    const rows = [one, null, two, one];
    const mixed = await model.forward(ids, { adapterRows: rows }).toFloat32Array();
    const vocab = model.dims.vocab;
    for (const adapters of [one, null, two]) {
      const saved = model.adapters;
      model.adapters = adapters;
      const uniform = await model.forward(ids).toFloat32Array();
      model.adapters = saved;
      for (const [b, rowAdapters] of rows.entries()) {
        if (rowAdapters === adapters) expect(Array.from(mixed.subarray(b * vocab, (b + 1) * vocab))).toEqual(Array.from(uniform.subarray(b * vocab, (b + 1) * vocab)));
      }
    }
    expect(() => model.forward(ids, { adapterRows: [one] })).toThrow(/adapterRows has 1 entries for a batch of 4/);
  });

  it('the scheduler decodes base and two adapters in the same steps, each as generate with its adapter', async () => {
    const scheduler = new DecodeScheduler(model, { maxBatch: 8 });
    const maxTokens = 20;
    const cases = promptIds.flatMap((ids) => [null, one, two].map((adapter) => ({ ids, adapter })));
    const outcomes = await Promise.all(cases.map(({ ids, adapter }) => scheduler.submit({ promptIds: ids, maxTokens, temperature: 0, topP: 1, seed: 0, stopIds: tokenizer.stopIds(), adapter })));
    expect(scheduler.stats.largestBatch).toBeGreaterThanOrEqual(3); // different adapters shared steps
    for (const [k, { ids, adapter }] of cases.entries()) expect(outcomes[k]!.ids).toEqual(await installed(adapter, ids, maxTokens));
    // The adapters do change the text (else the test would prove nothing).
    const texts = outcomes.slice(0, 3).map((o) => o.ids.join());
    expect(new Set(texts).size).toBeGreaterThan(1);
    // generateBatch (no adapterRows) is unchanged by it.
    const batch = await generateBatch(model, promptIds, { maxTokens, stopIds: tokenizer.stopIds() });
    for (const [k, ids] of promptIds.entries()) expect(batch[k]!.ids).toEqual(await installed(null, ids, maxTokens));
  });

  it('parses vLLM\'s NAME=DIR and {"name","path"} forms', () => {
    expect(parseLoraModule('rank1=/a/b=c')).toEqual({ name: 'rank1', dir: '/a/b=c' });
    expect(parseLoraModule('{"name": "x", "path": "/p"}')).toEqual({ name: 'x', dir: '/p' });
    expect(() => parseLoraModule('nodir')).toThrow(/NAME=DIR/);
    expect(() => parseLoraModule('=dir')).toThrow(/NAME=DIR/);
  });

  it('the CLI serves the base and each module by name: /v1/models lists them, answers differ per adapter, unknown names 404', async () => {
    const server = await startServeProcess(['--model', toy, '--name', 'toy', '--lora-modules', `one=${path.join(dir, 'one')}`, `two=${path.join(dir, 'two')}`, '--backend', 'cpu']);
    try {
      const models = await (await fetch(`${server.baseURL}/models`)).json();
      expect(models.data.map((m: { id: string }) => m.id)).toEqual(['toy', 'one', 'two']);
      expect(models.data[1].parent).toBe('toy');
      expect((await fetch(`${server.baseURL}/models/two`)).status).toBe(200);
      expect((await fetch(`${server.baseURL}/models/three`)).status).toBe(404);
      const ask = async (name: string) => {
        const response = await fetch(`${server.baseURL}/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: name, prompt: promptIds[0], max_tokens: 12, temperature: 0 }) });
        return response.json();
      };
      const answers = await Promise.all(['toy', 'one', 'two'].map(ask));
      for (const [k, adapter] of [null, one, two].entries()) {
        const ids = (await installed(adapter, promptIds[0]!, 12)).filter((id) => !tokenizer.stopIds().includes(id));
        expect(answers[k].model).toBe(['toy', 'one', 'two'][k]);
        expect(answers[k].choices[0].text).toBe(tokenizer.decode(ids, { skipSpecialTokens: true }));
      }
      // Chat completions route by model name too.
      const chat = await fetch(`${server.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'one', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }) });
      expect(chat.status).toBe(200);
      expect((await chat.json()).model).toBe('one');
      const missing = await ask('three');
      expect(missing.error.code).toBe('model_not_found');
      expect(missing.error.message).toContain('"toy", "one", "two"');
    } finally {
      server.child.kill('SIGTERM');
      await new Promise((resolve) => server.child.once('exit', resolve));
    }
  }, 60_000);
});
