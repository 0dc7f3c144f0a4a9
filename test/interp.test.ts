// The analysis layer (issue 8): the activation store, extraction, ablation sweeps and max-activating examples,
// checked against independent computations: `rank1 logits` processes for activations and KL, a full sort for
// top-k, a real SIGKILL for resume.
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { narrowFromF32, widenToF32 } from '../src/kernels/dtype.ts';
import { loadPeftAdapter, loadQwen2Checkpoint, savePeftAdapter } from '../src/model/load.ts';
import { randomRankOneAdapters } from '../src/model/random-model.ts';
import { tensor } from '../src/tensor/ops.ts';
import { adapterHookNames, featureName } from '../src/model/hooks.ts';
import { syntheticRows, tokensRowRecord } from '../src/train/data-synthetic.ts';
import { ActivationStore, STORE_INDEX_FILE, readStoreIndex } from '../src/interp/activation-store.ts';
import { ActivationStoreWriter } from '../src/interp/activation-store-writer.ts';
import { paperExtractionText } from '../src/interp/extract.ts';
import { ablationGroups, ablationSweep, chooseExamples } from '../src/interp/ablate.ts';
import { topActivations, type FeatureTopExamples } from '../src/interp/topk.ts';
import { Random } from '../src/tensor/random.ts';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '..');
const fixtures = path.join(root, 'test/fixtures/qwen2');
const tinyModel = path.join(fixtures, 'tiny-f32');
const tinyAdapter = path.join(fixtures, 'adapter-tiny-f32');
const rank1 = (...args: string[]) => run(process.execPath, [path.join(root, 'bin/rank1.js'), ...args], { cwd: root, maxBuffer: 256 << 20 });
const f16 = (values: Float32Array) => widenToF32(narrowFromF32(values, 'f16'), 'f16');

let dir: string;
let data: string;
const rows = syntheticRows(12, 5, { vocabSize: 64, minLength: 8, maxLength: 40 });

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-interp-'));
  data = path.join(dir, 'rows.jsonl');
  await fs.writeFile(data, `${rows.map((r) => JSON.stringify(tokensRowRecord(r))).join('\n')}\n`);
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function loadTiny() {
  const { model } = await loadQwen2Checkpoint(tinyModel, getCpuBackend());
  await loadPeftAdapter(tinyAdapter, model);
  return model;
}

describe('activation store', () => {
  it('reads back exactly what was written (f16), shard by shard, and refuses a store of another adapter', async () => {
    const out = path.join(dir, 'roundtrip');
    const hooks = adapterHookNames(2);
    const options = { dir: out, model: 'm', adapter: 'a', hooks, mlpNeurons: ['n0', 'n1'], data: 'd', rendering: 'training' as const, maxTokens: 9, shardTokens: 10 };
    const writer = await ActivationStoreWriter.open(options);
    const rng = new Random(3);
    const written: { example: number; ids: Int32Array; acts: Float32Array; mlp: Float32Array }[] = [];
    for (let e = 0; e < 7; e++) {
      const T = 1 + rng.int(8);
      const ids = Int32Array.from({ length: T }, () => rng.int(64));
      const acts = Float32Array.from({ length: T * hooks.length }, () => rng.range(-3, 3));
      const mlp = Float32Array.from({ length: T * 2 }, () => rng.range(-1, 1));
      written.push({ example: 2 * e, ids, acts, mlp });
      await writer.add({ example: 2 * e, inputIds: ids, acts, mlp });
    }
    const index = await writer.finish();
    expect(index.complete).toBe(true);
    expect(index.shards.length).toBeGreaterThan(1);
    const store = await ActivationStore.open(out);
    const read = [];
    for await (const ex of store.examples()) read.push(ex);
    expect(read.map((r) => r.example)).toEqual(written.map((w) => w.example));
    read.forEach((r, i) => {
      expect(Array.from(r.inputIds)).toEqual(Array.from(written[i]!.ids));
      expect(Array.from(r.acts)).toEqual(Array.from(f16(written[i]!.acts)));
      expect(Array.from(r.mlp!)).toEqual(Array.from(f16(written[i]!.mlp)));
    });
    // Another adapter (different hooks) cannot resume into it, and the store is untouched.
    const before = await fs.readFile(path.join(out, STORE_INDEX_FILE), 'utf8');
    await expect(ActivationStoreWriter.open({ ...options, hooks: hooks.slice(0, 7) })).rejects.toThrow(/made with hooks "14 adapter hooks", not "7"/);
    await expect(ActivationStoreWriter.open({ ...options, maxTokens: 10 })).rejects.toThrow(/--max-tokens 9, not 10/);
    expect(await fs.readFile(path.join(out, STORE_INDEX_FILE), 'utf8')).toBe(before);
  });

  it('names a truncated shard and a shard whose hook count disagrees with index.json', async () => {
    const out = path.join(dir, 'damaged');
    const writer = await ActivationStoreWriter.open({ dir: out, model: 'm', adapter: 'a', hooks: adapterHookNames(1), mlpNeurons: [], data: 'd', rendering: 'training', maxTokens: 9, shardTokens: 4 });
    for (let e = 0; e < 3; e++) await writer.add({ example: e, inputIds: Int32Array.of(1, 2, 3, 4), acts: new Float32Array(28).fill(e) });
    await writer.finish();
    const shard1 = path.join(out, 'shard-00001.safetensors');
    const bytes = await fs.readFile(shard1);
    await fs.writeFile(shard1, bytes.subarray(0, bytes.length - 5));
    const store = await ActivationStore.open(out);
    await expect(store.readShard(0)).resolves.toBeDefined();
    await expect(store.readShard(1)).rejects.toThrow(/shard-00001\.safetensors: unreadable shard .*truncated or corrupt/);
    const index = JSON.parse(await fs.readFile(path.join(out, STORE_INDEX_FILE), 'utf8'));
    index.hooks = adapterHookNames(2);
    await fs.writeFile(path.join(out, STORE_INDEX_FILE), JSON.stringify(index));
    const foreign = await ActivationStore.open(out);
    await expect(foreign.readShard(0)).rejects.toThrow(/shard-00000\.safetensors: tensor "acts" is F16 \[4, 7\], but index\.json says F16 \[4, 14\] \(a store made with 7 hooks, not 14/);
    await expect(readStoreIndex(path.join(dir, 'nowhere'))).rejects.toThrow(/nowhere is not an activation store: there is no index\.json/);
  });
});

describe('rank1 extract', () => {
  it('stores the same A·x as rank1 logits prints for the same ids', async () => {
    const out = path.join(dir, 'extract-vs-logits');
    await rank1('extract', '--model', tinyModel, '--adapter', tinyAdapter, '--data', data, '--out', out, '--shard-tokens', '50', '--backend', 'cpu', '--no-progress');
    const store = await ActivationStore.open(out);
    expect(store.index.complete).toBe(true);
    expect(store.index.examples).toBe(rows.length);
    expect(store.index.hooks).toEqual(adapterHookNames(2));
    const examples = [];
    for await (const ex of store.examples()) examples.push(ex);
    for (const e of [0, 7]) {
      const ids = Array.from(rows[e]!.inputIds);
      const printed = JSON.parse((await rank1('logits', '--model', tinyModel, '--adapter', tinyAdapter, '--ids', ids.join(','), '--backend', 'cpu')).stdout);
      const ex = examples.find((x) => x.example === e)!;
      expect(Array.from(ex.inputIds)).toEqual(ids);
      store.index.hooks.forEach((hook, h) => {
        const expected = f16(Float32Array.from(printed.acts[hook] as number[]));
        const stored = Array.from({ length: ids.length }, (_, t) => ex.acts[t * store.index.hooks.length + h]!);
        expect(stored).toEqual(Array.from(expected));
      });
    }
  });

  it('resumes after a real kill with no example lost or duplicated', async () => {
    const many = path.join(dir, 'many.jsonl');
    const manyRows = syntheticRows(150, 9, { vocabSize: 64, minLength: 20, maxLength: 60 });
    await fs.writeFile(many, manyRows.map((r) => JSON.stringify(tokensRowRecord(r))).join('\n'));
    const args = (out: string) => ['extract', '--model', tinyModel, '--adapter', tinyAdapter, '--data', many, '--out', out, '--shard-tokens', '200', '--mlp-neurons', '3', '--backend', 'cpu', '--no-progress'];
    const killed = path.join(dir, 'killed');
    const child = spawn(process.execPath, [path.join(root, 'bin/rank1.js'), ...args(killed)], { cwd: root });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    // Kill it once at least two shards are durable and before it can finish.
    for (;;) {
      const index = await readStoreIndex(killed).catch(() => null);
      if (index && index.shards.length >= 2) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    const partial = await readStoreIndex(killed);
    expect(partial.complete).toBe(false);
    expect(partial.examples).toBeLessThan(manyRows.length);
    await rank1(...args(killed));
    const whole = path.join(dir, 'whole');
    await rank1(...args(whole));
    const read = async (out: string) => {
      const list = [];
      for await (const ex of (await ActivationStore.open(out)).examples()) list.push({ example: ex.example, ids: Array.from(ex.inputIds), acts: Array.from(ex.acts), mlp: Array.from(ex.mlp!) });
      return list;
    };
    const resumed = await read(killed);
    expect(resumed.map((r) => r.example)).toEqual(manyRows.map((_, i) => i));
    expect(resumed).toEqual(await read(whole));
  }, 60_000);

  it('refuses an empty data file and a store made from another adapter, naming them, without touching the store', async () => {
    const empty = path.join(dir, 'empty.jsonl');
    await fs.writeFile(empty, '\n');
    const out = path.join(dir, 'refusals');
    await expect(rank1('extract', '--model', tinyModel, '--adapter', tinyAdapter, '--data', empty, '--out', out, '--backend', 'cpu', '--no-progress'))
      .rejects.toMatchObject({ stderr: expect.stringMatching(/empty\.jsonl: no rows/) });
    const misfit = path.join(dir, 'misfit-store');
    await expect(rank1('extract', '--model', path.join(fixtures, 'tiny-bf16-tied'), '--adapter', tinyAdapter, '--data', data, '--out', misfit, '--backend', 'cpu', '--no-progress'))
      .rejects.toMatchObject({ stderr: expect.stringMatching(/adapter-tiny-f32\/adapter_model\.safetensors: tensor "base_model\.model\.model\.layers\.0\.mlp\.gate_proj\.lora_A\.weight" has shape \[1, 32\], expected \[1, 56\]/) });
    await expect(fs.access(misfit)).rejects.toThrow();
    const store = path.join(dir, 'extract-vs-logits');
    const before = await fs.readFile(path.join(store, STORE_INDEX_FILE), 'utf8');
    const other = path.join(dir, 'other-adapter');
    await fs.cp(tinyAdapter, other, { recursive: true });
    await expect(rank1('extract', '--model', tinyModel, '--adapter', other, '--data', data, '--out', store, '--backend', 'cpu', '--no-progress'))
      .rejects.toMatchObject({ stderr: expect.stringMatching(/index\.json: this store was made with --adapter .*adapter-tiny-f32.*not .*other-adapter/) });
    expect(await fs.readFile(path.join(store, STORE_INDEX_FILE), 'utf8')).toBe(before);
  });

  it('renders s1K rows as the paper\'s extraction does with --format paper', () => {
    expect(paperExtractionText('Q?', ['a', 'b'], 'X')).toBe(
      '<|im_start|>system\nYou are a helpful mathematics assistant.\n<|im_start|>user\nQ?\n<|im_start|>assistant\n<|im_start|>think\na\nb\n<|im_start|>answer\nX<|im_end|>');
  });
});

/** KL(p ‖ q) of two logit rows, in f64. */
function klOfLogits(p: readonly number[], q: readonly number[]): number {
  const logSoftmax = (x: readonly number[]) => {
    const m = Math.max(...x);
    const z = Math.log(x.reduce((s, v) => s + Math.exp(v - m), 0)) + m;
    return x.map((v) => v - z);
  };
  const lp = logSoftmax(p);
  const lq = logSoftmax(q);
  return lp.reduce((s, v, i) => s + Math.exp(v) * (v - lq[i]!), 0);
}

describe('ablation sweep', () => {
  it('a group\'s KL equals the KL between two rank1 logits runs, with and without --ablate', async () => {
    const model = await loadTiny();
    const examples = [1, 4].map((e) => ({ example: e, inputIds: rows[e]!.inputIds }));
    const groups = [
      { name: 'one', kind: 'adapter' as const, adapters: ['model.layers.1.mlp.down_proj'] },
      { name: 'two', kind: 'layer' as const, adapters: ['model.layers.0.self_attn.v_proj', 'model.layers.1.mlp.up_proj'] },
      { name: 'layer 0', kind: 'layer' as const, adapters: adapterHookNames(1) },
    ];
    const result = await ablationSweep(model, examples, groups, { batch: 2 });
    const expected: number[] = [];
    const expectedCe: number[] = [];
    for (const group of groups) {
      let klTotal = 0;
      let ceTotal = 0;
      for (const { inputIds } of examples) {
        const ids = Array.from(inputIds).join(',');
        const full = JSON.parse((await rank1('logits', '--model', tinyModel, '--adapter', tinyAdapter, '--ids', ids, '--backend', 'cpu')).stdout).logits as number[][];
        const ablated = JSON.parse((await rank1('logits', '--model', tinyModel, '--adapter', tinyAdapter, '--ids', ids, '--ablate', group.adapters.join(','), '--backend', 'cpu')).stdout).logits as number[][];
        klTotal += full.reduce((s, row, t) => s + klOfLogits(row, ablated[t]!), 0) / full.length;
        let ce = 0;
        for (let t = 0; t + 1 < inputIds.length; t++) ce -= Math.log(Math.exp(ablated[t]![inputIds[t + 1]!]!) / ablated[t]!.reduce((s, v) => s + Math.exp(v), 0));
        ceTotal += ce / (inputIds.length - 1);
      }
      expected.push(klTotal / examples.length);
      expectedCe.push(ceTotal / examples.length);
    }
    result.groups.forEach((g, i) => {
      expect(g.kl).toBeGreaterThan(1e-4);
      expect(Math.abs(g.kl - expected[i]!)).toBeLessThan(1e-4 * Math.max(1, expected[i]!) + 2e-6);
      expect(g.ce).toBeCloseTo(expectedCe[i]!, 4);
    });
    expect(result.examples).toEqual([1, 4]);
    expect(result.tokens).toBe(rows[1]!.inputIds.length + rows[4]!.inputIds.length);
    model.dispose();
  }, 180_000 /* 12 CLI runs */);

  it('a forward started at layer l from the recorded resid_pre equals the full forward', async () => {
    const model = await loadTiny();
    const ids = tensor(rows[3]!.inputIds, [1, rows[3]!.inputIds.length], { dtype: 'i32' });
    const { runWithCache } = await import('../src/model/activation-cache.ts');
    const { logits, cache } = runWithCache(model, ids, ['model.layers.1.resid_pre']);
    const residual = cache.get('model.layers.1.resid_pre');
    const resumed = model.forward(ids, { startLayer: 1, residual });
    expect(Array.from(await resumed.toFloat32Array())).toEqual(Array.from(await logits.toFloat32Array()));
    const other = model.forward(ids, { startLayer: 1, residual: tensor(new Float32Array(residual.size), residual.shape) });
    expect(Array.from(await other.toFloat32Array())).not.toEqual(Array.from(await logits.toFloat32Array()));
    expect(() => model.forward(ids, { startLayer: 2, residual })).toThrow(/startLayer 2 is outside \[0, 2\)/);
    expect(() => model.forward(ids, { startLayer: 1 })).toThrow(/startLayer and residual go together/);
    cache.dispose();
    model.dispose();
  });

  it('batched, prefix-sharing sweeps equal one ablated forward at a time', async () => {
    const model = await loadTiny();
    const examples = [0, 2].map((e) => ({ example: e, inputIds: rows[e]!.inputIds }));
    const groups = ablationGroups(2, adapterHookNames(2), 1);
    const batched = await ablationSweep(model, examples, groups, { batch: 16 });
    const single = await ablationSweep(model, examples, groups, { batch: 1 });
    batched.groups.forEach((g, i) => {
      expect(g.kl).toBeCloseTo(single.groups[i]!.kl, 5);
      expect(g.ce).toBeCloseTo(single.groups[i]!.ce, 5);
    });
    model.dispose();
  });

  it('groups and example draws follow the paper', () => {
    const groups = ablationGroups(3, adapterHookNames(3), 2);
    expect(groups.filter((g) => g.kind === 'layer').map((g) => g.adapters.length)).toEqual([7, 7, 7]);
    expect(groups.filter((g) => g.kind === 'block').map((g) => g.name)).toEqual(['layers 0-1', 'layers 2-2']);
    expect(groups.filter((g) => g.kind === 'adapter')).toHaveLength(21);
    expect(groups.find((g) => g.kind === 'mlp')!.adapters).toHaveLength(9);
    expect(groups.find((g) => g.kind === 'attention')!.adapters).toHaveLength(12);
    expect(groups.find((g) => g.kind === 'all')!.adapters).toHaveLength(21);
    const lengths = Array.from({ length: 40 }, (_, i) => ({ example: i, tokens: i % 3 === 0 ? 50 : 150 }));
    const drawn = chooseExamples(lengths, 16, 42, 100);
    expect(drawn).toHaveLength(16);
    expect(drawn.every((e) => e % 3 !== 0)).toBe(true);
    expect(chooseExamples(lengths, 16, 42, 100)).toEqual(drawn);
    expect(chooseExamples(lengths, 16, 43, 100)).not.toEqual(drawn);
    expect(chooseExamples(lengths, 'all', 42, 100)).toHaveLength(26);
    expect(() => chooseExamples(lengths, 3, 42, 1000)).toThrow(/no example has more than 1000 tokens/);
  });
});

describe('rank1 topk', () => {
  /** The reference: every active value of a feature, fully sorted (|value| desc, example, position). */
  function bruteForce(examples: { example: number; ids: Int32Array; acts: Float32Array }[], hooks: number, k: number, context: number, minAbs: number) {
    const out: { count: number; top: { example: number; position: number; value: number; ids: number[]; values: number[] }[] }[] = [];
    for (let h = 0; h < hooks; h++) {
      for (const sign of [1, -1]) {
        const all: { example: number; position: number; value: number; ids: number[]; values: number[] }[] = [];
        for (const ex of examples) {
          for (let t = 0; t < ex.ids.length; t++) {
            const v = ex.acts[t * hooks + h]!;
            const from = Math.max(0, t - context);
            const to = Math.min(ex.ids.length, t + context + 1);
            const values = Array.from({ length: to - from }, (_, u) => ex.acts[(from + u) * hooks + h]!);
            if (Math.abs(v) > minAbs && Math.sign(v) === sign) all.push({ example: ex.example, position: t, value: v, ids: Array.from(ex.ids.slice(from, to)), values });
          }
        }
        all.sort((a, b) => Math.abs(b.value) - Math.abs(a.value) || a.example - b.example || a.position - b.position);
        out.push({ count: all.length, top: all.slice(0, k) });
      }
    }
    return out;
  }

  it('equals a full sort of the store, ties included (random stores)', async () => {
    let round = 0;
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 1 << 30 }),
      async (hookLayers, k, context, seed) => {
        const out = path.join(dir, `topk-${round++}`);
        const hooks = adapterHookNames(hookLayers).slice(0, 2 + (seed % 5));
        const writer = await ActivationStoreWriter.open({ dir: out, model: 'm', adapter: 'a', hooks, mlpNeurons: [], data: 'd', rendering: 'training', maxTokens: 99, shardTokens: 13 });
        const rng = new Random(seed);
        const examples: { example: number; ids: Int32Array; acts: Float32Array }[] = [];
        for (let e = 0; e < 1 + rng.int(6); e++) {
          const T = 1 + rng.int(12);
          const ids = Int32Array.from({ length: T }, () => rng.int(50));
          // Coarse values make ties and values at the threshold common.
          const acts = f16(Float32Array.from({ length: T * hooks.length }, () => (rng.int(9) - 4) / 4));
          examples.push({ example: e * 3, ids, acts });
          await writer.add({ example: e * 3, inputIds: ids, acts });
        }
        await writer.finish();
        const features = await topActivations(await ActivationStore.open(out), { k, context, minAbs: 0.25 });
        const reference = bruteForce(examples, hooks.length, k, context, 0.25);
        expect(features).toHaveLength(2 * hooks.length);
        features.forEach((f: FeatureTopExamples, i) => {
          expect(f.feature).toBe(featureName(hooks[i >> 1]!, i % 2 === 0 ? 'pos' : 'neg'));
          expect(f.active_count).toBe(reference[i]!.count);
          expect(f.histogram.counts.reduce((a, b) => a + b, 0)).toBe(reference[i]!.count);
          expect(f.examples.map((x) => [x.example, x.position, x.value, x.context_ids, x.context_ids[x.center], x.context_values])).toEqual(
            reference[i]!.top.map((x) => [x.example, x.position, x.value, x.ids, examples.find((e) => e.example === x.example)!.ids[x.position], x.values]));
        });
        await fs.rm(out, { recursive: true, force: true });
      }), { numRuns: 25 });
  });

  it('feature names follow the paper (L{l}_{proj}_{pos|neg})', () => {
    expect(featureName('model.layers.12.self_attn.q_proj', 'pos')).toBe('L12_q_proj_pos');
    expect(featureName('model.layers.0.mlp.down_proj', 'neg')).toBe('L0_down_proj_neg');
    expect(featureName('model.layers.3.mlp.up_proj.output[17]', 'neg')).toBe('L3_up_neuron17_neg');
  });

  it('extract → topk → features.jsonl, with MLP neurons, end to end', async () => {
    const store = path.join(dir, 'e2e-store');
    await rank1('extract', '--model', tinyModel, '--adapter', tinyAdapter, '--data', data, '--out', store, '--mlp-neurons', '2', '--backend', 'cpu', '--no-progress');
    const out = path.join(dir, 'e2e-topk');
    await rank1('topk', '--store', store, '--out', out, '--k', '5', '--context', '3', '--no-progress');
    const lines = (await fs.readFile(path.join(out, 'features.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(2 * 14 + 2 * 4);
    expect(lines[0].feature).toBe('L0_gate_proj_pos');
    expect(lines[28].feature).toBe('L0_up_neuron0_pos');
    for (const f of lines) {
      expect(f.examples.length).toBeLessThanOrEqual(5);
      for (let i = 1; i < f.examples.length; i++) expect(Math.abs(f.examples[i].value)).toBeLessThanOrEqual(Math.abs(f.examples[i - 1].value));
      for (const x of f.examples) {
        expect(f.polarity === 'pos' ? x.value > 0.01 : x.value < -0.01).toBe(true);
        expect(x.context_ids[x.center]).toBe(rows[x.example]!.inputIds[x.position]);
      }
    }
  });
});

describe('rank1 extract | ablate | topk on the toy world', () => {
  it('writes a store, ablation.json with figures and table, and features.jsonl, all well formed', async () => {
    const toy = path.join(root, 'models/toy');
    // A rank-1 adapter with every B non-zero, so ablations move the model (training is tested elsewhere).
    const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
    const adapters = randomRankOneAdapters(model.dims, 1, getCpuBackend());
    const adapterDir = path.join(dir, 'toy-adapter');
    await savePeftAdapter(adapterDir, adapters);
    model.dispose();
    const traces = path.join(dir, 'toy-traces.jsonl');
    await fs.writeFile(traces, Array.from({ length: 3 }, (_, i) => JSON.stringify({
      question: `What is the last digit of ${i + 12} + ${i + 7}?`,
      deepseek_thinking_trajectory: `Okay, let me work through this. ${i + 12} + ${i + 7} = ${2 * i + 19}. Wait, let me check: yes. So the last digit is ${(2 * i + 19) % 10}.`,
      deepseek_attempt: `The last digit is \\boxed{${(2 * i + 19) % 10}}.`,
    })).join('\n'));
    const store = path.join(dir, 'toy-store');
    await rank1('extract', '--model', toy, '--adapter', adapterDir, '--data', traces, '--out', store, '--backend', 'cpu', '--no-progress');
    const index = await readStoreIndex(store);
    expect(index.examples).toBe(3);
    expect(index.hooks).toHaveLength(7 * 4);
    await fs.access(path.join(store, 'tokenizer.json'));
    const ablation = path.join(dir, 'toy-ablation');
    const { stdout } = await rank1('ablate', '--model', toy, '--adapter', adapterDir, '--data', traces, '--out', ablation, '--min-tokens', '10', '--backend', 'cpu', '--no-progress');
    expect(stdout).toMatch(/\| MLP \(gate, up, down\) \| 12 \|/);
    const result = JSON.parse(await fs.readFile(path.join(ablation, 'ablation.json'), 'utf8'));
    expect(result.examples).toEqual([0, 1, 2]);
    expect(result.groups.filter((g: { kind: string }) => g.kind === 'adapter')).toHaveLength(28);
    for (const g of result.groups) expect(g.kl).toBeGreaterThan(0);
    for (const figure of ['kl-by-layer.svg', 'adapter-heatmap.svg']) expect(await fs.readFile(path.join(ablation, figure), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\s*$/);
    expect(await fs.readFile(path.join(ablation, 'table2.md'), 'utf8')).toMatch(/\| attention \(q, k, v, o\) \| 16 \|/);
    const features = path.join(dir, 'toy-features');
    await rank1('topk', '--store', store, '--out', features, '--no-progress');
    const lines = (await fs.readFile(path.join(features, 'features.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(56);
    const withExamples = lines.find((f) => f.examples.length > 0)!;
    expect(withExamples.examples[0].context_tokens.join('')).toMatch(/\S/);
  }, 120_000);
});
