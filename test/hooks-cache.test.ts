// TransformerLens-style hook points and runWithCache on random tiny models: every listed point fires once in
// forward order with its listed shape; q/k/v, the pattern and o_proj.input agree with attention done by hand
// (also across a KV cache); the residual chain, logits, filters, adapter stacking and replacement all hold.
import { describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { linear, mul, rmsNorm, tensor } from '../src/tensor/ops.ts';
import { tidy, type Tensor } from '../src/tensor/tensor.ts';
import { PROJECTIONS, adapterHookName, adapterHookNames, hookName, listHookPoints } from '../src/model/hooks.ts';
import { HookRecorder, steer, withHooks, zeroAblate, type HookFn } from '../src/model/hook-registry.ts';
import { ActivationCache, runWithCache } from '../src/model/activation-cache.ts';
import type { LoraAdapters } from '../src/model/lora.ts';
import { KVCache, type Qwen2Model } from '../src/model/qwen2.ts';
import { randomQwen2Model, randomRankOneAdapters, tinyQwen2Config } from '../src/model/random-model.ts';

const cpu = getCpuBackend();
const config = tinyQwen2Config(); // 2 layers, H 32, I 48, nh 4, kv 2, hd 8, V 64

function ids(values: number[][]) {
  return tensor(Int32Array.from(values.flat()), [values.length, values[0]!.length], { backend: cpu, dtype: 'i32' });
}

/** Adapters with random non-zero B, so that they change the output. */
const randomAdapters = (model: Qwen2Model, seed: number): LoraAdapters => randomRankOneAdapters(model.dims, seed, cpu, 0.05);

function adaptedModel(seed: number): Qwen2Model {
  const model = randomQwen2Model(config, seed, cpu);
  model.adapters = randomAdapters(model, seed + 100);
  return model;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

const values = (t: Tensor) => t.toFloat32Array();

/** A listed shape ("[B, 4, T, S]") with its symbolic axes filled in. */
function concreteShape(listed: string, axes: { B: number; T: number; S: number }): number[] {
  return listed.slice(1, -1).split(', ').map((axis) => (axis in axes ? axes[axis as keyof typeof axes] : Number(axis)));
}

/**
 * Causal GQA attention in plain loops: q [B, T, nh, hd], k/v [B, S, kv, hd] -> pattern [B, nh, T, S] and
 * z [B, T, nh·hd]; query t sits at position S - T + t.
 */
function handAttention(q: Float32Array, k: Float32Array, v: Float32Array, B: number, T: number, S: number) {
  const { numAttentionHeads: nh, numKeyValueHeads: kv, headDim: hd } = config;
  const pattern = new Float64Array(B * nh * T * S);
  const z = new Float64Array(B * T * nh * hd);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nh; h++) {
      const kvHead = Math.floor(h / (nh / kv));
      for (let t = 0; t < T; t++) {
        const visible = S - T + t + 1;
        const scores = Array.from({ length: visible }, (_, s) => {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[((b * T + t) * nh + h) * hd + d]! * k[((b * S + s) * kv + kvHead) * hd + d]!;
          return dot / Math.sqrt(hd);
        });
        const top = Math.max(...scores);
        const weights = scores.map((x) => Math.exp(x - top));
        const total = weights.reduce((x, y) => x + y, 0);
        for (let s = 0; s < visible; s++) {
          const p = weights[s]! / total;
          pattern[((b * nh + h) * T + t) * S + s] = p;
          for (let d = 0; d < hd; d++) z[((b * T + t) * nh + h) * hd + d] += p * v[((b * S + s) * kv + kvHead) * hd + d]!;
        }
      }
    }
  }
  return { pattern, z };
}

/** Rotate-half RoPE of x [B, T, heads, hd] (positions start + t), as Hugging Face computes it. */
function handRope(x: Float32Array, B: number, T: number, heads: number, start = 0): Float64Array {
  const hd = config.headDim;
  const half = hd / 2;
  const out = new Float64Array(x.length);
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let h = 0; h < heads; h++) {
    const base = ((b * T + t) * heads + h) * hd;
    for (let i = 0; i < half; i++) {
      const angle = (start + t) * Math.pow(config.ropeTheta, -(2 * i) / hd);
      const [x1, x2] = [x[base + i]!, x[base + i + half]!];
      out[base + i] = x1 * Math.cos(angle) - x2 * Math.sin(angle);
      out[base + i + half] = x2 * Math.cos(angle) + x1 * Math.sin(angle);
    }
  }
  return out;
}

describe('hook points', () => {
  it('keeps the published names, in forward order', () => {
    const names = listHookPoints(randomQwen2Model(config, 1, cpu).dims).filter((p) => p.layer === undefined || p.layer === 0).map((p) => p.name);
    const attn = 'model.layers.0.self_attn';
    const mlp = 'model.layers.0.mlp';
    expect(names).toEqual([
      'model.embed_tokens.output',
      'model.layers.0.resid_pre',
      `${attn}.q_proj`, `${attn}.q_proj.output`, `${attn}.k_proj`, `${attn}.k_proj.output`, `${attn}.v_proj`, `${attn}.v_proj.output`,
      `${attn}.q`, `${attn}.k`, `${attn}.v`, `${attn}.pattern`, `${attn}.o_proj.input`, `${attn}.o_proj`, `${attn}.o_proj.output`,
      'model.layers.0.resid_mid',
      `${mlp}.gate_proj`, `${mlp}.gate_proj.output`, `${mlp}.up_proj`, `${mlp}.up_proj.output`, `${mlp}.act`,
      `${mlp}.down_proj`, `${mlp}.down_proj.output`,
      'model.layers.0.resid_post',
      'model.norm.output',
      'lm_head.output',
    ]);
    expect(hookName.projectionOutput(3, 'up_proj')).toBe('model.layers.3.mlp.up_proj.output');
    expect(hookName.adapter(3, 'o_proj')).toBe(adapterHookName(3, 'o_proj'));
  });

  it('every listed hook point fires exactly once per forward, in listed order, with the listed shape', () => {
    const model = adaptedModel(2);
    const points = listHookPoints(model.dims);
    expect(points).toHaveLength(3 + 23 * config.numHiddenLayers);
    const fire = (input: Tensor, cache?: KVCache) => {
      const fired: { name: string; shape: number[]; offset: number }[] = [];
      const record: HookFn = (value, { name, positionOffset }) => void fired.push({ name, shape: [...value.shape], offset: positionOffset });
      withHooks(model, [['*', record]], () => model.forward(input, { cache }).dispose());
      return fired;
    };
    const check = (fired: ReturnType<typeof fire>, listed: typeof points, axes: { B: number; T: number; S: number }) => {
      expect(fired.map((f) => f.name)).toEqual(listed.map((p) => p.name));
      fired.forEach((f, i) => expect(f.shape, f.name).toEqual(concreteShape(listed[i]!.shape, axes)));
    };
    check(fire(ids([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])), points, { B: 2, T: 5, S: 5 });
    // With a KV cache: this call's T tokens attend to S = cache + T keys, and hooks see the offset.
    const cache = new KVCache(model.dims, 2, cpu);
    model.forward(ids([[1, 2, 3], [4, 5, 6]]), { cache }).dispose();
    const step = fire(ids([[7, 8], [9, 10]]), cache);
    check(step, points, { B: 2, T: 2, S: 5 });
    expect(new Set(step.map((f) => f.offset))).toEqual(new Set([3]));
    cache.dispose();
    // Without adapters, everything but the adapter hooks.
    const adapters = model.adapters!;
    model.adapters = null;
    check(fire(ids([[1, 2, 3]])), points.filter((p) => p.kind !== 'adapter'), { B: 1, T: 3, S: 3 });
    model.adapters = adapters;
    expect(model.hooks.size).toBe(0);
    model.dispose();
  });

  it('q and k are after RoPE, v is v_proj\'s output, and attention by hand from them gives o_proj.input', async () => {
    const model = adaptedModel(3);
    const [B, T] = [2, 6];
    const { logits, cache } = runWithCache(model, ids([[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8]]));
    const { numAttentionHeads: nh, numKeyValueHeads: kv } = config;
    for (let l = 0; l < config.numHiddenLayers; l++) {
      const q = await values(cache.layer('q', l));
      const k = await values(cache.layer('k', l));
      const v = await values(cache.layer('v', l));
      expect(maxAbsDiff(q, handRope(await values(cache.layer('q_proj.output', l)), B, T, nh))).toBeLessThan(1e-5);
      expect(maxAbsDiff(k, handRope(await values(cache.layer('k_proj.output', l)), B, T, kv))).toBeLessThan(1e-5);
      expect(v).toEqual(await values(cache.layer('v_proj.output', l)));
      // RoPE really rotated something (positions > 0), so the check above can fail.
      expect(maxAbsDiff(q, await values(cache.layer('q_proj.output', l)))).toBeGreaterThan(1e-3);
      const { z } = handAttention(q, k, v, B, T, T);
      expect(maxAbsDiff(await values(cache.layer('z', l)), z)).toBeLessThan(1e-5);
    }
    logits.dispose();
    cache.dispose();
    model.dispose();
  });

  it('the pattern: rows sum to 1, causal, equal to the softmax by hand, and pattern · v = o_proj.input', async () => {
    const model = adaptedModel(4);
    const [B, T] = [2, 5];
    const { numAttentionHeads: nh, numKeyValueHeads: kv, headDim: hd } = config;
    const { logits, cache } = runWithCache(model, ids([[10, 20, 30, 40, 50], [11, 21, 31, 41, 51]]), (name) => /self_attn\.(q|k|v|pattern|o_proj\.input)$/.test(name));
    expect(cache.names).toHaveLength(5 * config.numHiddenLayers);
    for (let l = 0; l < config.numHiddenLayers; l++) {
      const patternTensor = cache.layer('pattern', l);
      expect(patternTensor.shape).toEqual([B, nh, T, T]);
      const pattern = await values(patternTensor);
      const v = await values(cache.layer('v', l));
      const z = new Float64Array(B * T * nh * hd);
      for (let b = 0; b < B; b++) for (let h = 0; h < nh; h++) for (let t = 0; t < T; t++) {
        const row = pattern.subarray(((b * nh + h) * T + t) * T, ((b * nh + h) * T + t + 1) * T);
        expect(row.reduce((x, y) => x + y, 0)).toBeCloseTo(1, 5);
        for (let s = t + 1; s < T; s++) expect(row[s]).toBe(0);
        expect(row[t]).toBeGreaterThan(0);
        const kvHead = Math.floor(h / (nh / kv));
        for (let s = 0; s < T; s++) for (let d = 0; d < hd; d++) z[((b * T + t) * nh + h) * hd + d] += row[s]! * v[((b * T + s) * kv + kvHead) * hd + d]!;
      }
      expect(maxAbsDiff(await values(cache.layer('z', l)), z)).toBeLessThan(1e-5);
      const byHand = handAttention(await values(cache.layer('q', l)), await values(cache.layer('k', l)), v, B, T, T);
      expect(maxAbsDiff(pattern, byHand.pattern)).toBeLessThan(1e-5);
    }
    logits.dispose();
    cache.dispose();
    model.dispose();
  });

  it('the pattern with a KV cache: the new queries\' rows of the full sequence\'s pattern', async () => {
    const model = adaptedModel(5);
    const sequence = [5, 4, 3, 2, 1, 60, 61];
    const patterns = [hookName.pattern(0), hookName.pattern(1)];
    const full = runWithCache(model, sequence, patterns);
    const nh = config.numAttentionHeads;
    const S = sequence.length;
    for (const [prefill, fed] of [[4, 3], [6, 1]] as const) {
      const kvCache = new KVCache(model.dims, 1, cpu, 2);
      model.forward(ids([sequence.slice(0, prefill)]), { cache: kvCache }).dispose();
      const step = runWithCache(model, sequence.slice(prefill, prefill + fed), patterns, { cache: kvCache });
      for (let l = 0; l < config.numHiddenLayers; l++) {
        const pattern = step.cache.layer('pattern', l);
        expect(pattern.shape).toEqual([1, nh, fed, S]);
        const whole = await values(full.cache.layer('pattern', l)); // [1, nh, S, S]
        const expected = Array.from({ length: nh * fed * S }, (_, i) => {
          const [h, t, s] = [Math.floor(i / (fed * S)), Math.floor(i / S) % fed, i % S];
          return whole[(h * S + prefill + t) * S + s]!;
        });
        const got = await values(pattern);
        expect(maxAbsDiff(got, expected)).toBeLessThan(1e-5);
        if (fed > 1) expect(got[S - 1]).toBe(0); // head 0, first new query: the last key is ahead
      }
      step.logits.dispose();
      step.cache.dispose();
      kvCache.dispose();
    }
    // A recorder across calls keeps the patterns apart: their key axes differ, so they do not concatenate.
    const recorder = new HookRecorder();
    const kvCache = new KVCache(model.dims, 1, cpu);
    withHooks(model, { [hookName.pattern(0)]: recorder.hook }, () => {
      model.forward(ids([sequence.slice(0, 6)]), { cache: kvCache }).dispose();
      model.forward(ids([sequence.slice(6)]), { cache: kvCache }).dispose();
    });
    expect(recorder.chunks.get(hookName.pattern(0))!.map((t) => t.shape)).toEqual([[1, 4, 6, 6], [1, 4, 1, 7]]);
    expect(() => recorder.get(hookName.pattern(0))).toThrow(/differ outside the token axis/);
    recorder.dispose();
    kvCache.dispose();
    full.logits.dispose();
    full.cache.dispose();
    model.dispose();
  });

  it('pattern hooks are read-only; in batched decoding the pattern throws and q/k/v hooks act per sequence', async () => {
    const model = adaptedModel(6);
    expect(() => withHooks(model, { [hookName.pattern(1)]: (p) => mul(p, 1) }, () => model.forward(ids([[1, 2, 3]])))).toThrow(/read-only/);
    const prompts = [[1, 2, 3], [4, 5]];
    const prefill = () => prompts.map((p) => {
      const c = new KVCache(model.dims, 1, cpu);
      model.forward(ids([p]), { cache: c }).dispose();
      return c;
    });
    const caches = prefill();
    expect(() => withHooks(model, { [hookName.pattern(0)]: () => {} }, () => model.forward(ids([[7], [8]]), { caches }))).toThrow(/not available in batched decoding/);
    // Steering the queries in batched decoding equals steering each sequence alone; k is recorded per row.
    const steered = { [hookName.q(1)]: steer(0.5) };
    const fresh = prefill();
    const batched = withHooks(model, steered, () => runWithCache(model, ids([[7], [8]]), [hookName.k(1)], { caches: fresh }));
    const batchedLogits = await values(batched.logits);
    const batchedK = await values(batched.cache.get(hookName.k(1)));
    const alone = prefill();
    const perRow = await Promise.all([7, 8].map(async (token, b) => {
      const run = withHooks(model, steered, () => runWithCache(model, [token], [hookName.k(1)], { cache: alone[b]! }));
      const out = { logits: await values(run.logits), k: await values(run.cache.get(hookName.k(1))) };
      run.logits.dispose();
      run.cache.dispose();
      return out;
    }));
    expect(maxAbsDiff(batchedLogits, [...perRow[0]!.logits, ...perRow[1]!.logits])).toBeLessThan(1e-5);
    expect(maxAbsDiff(batchedK, [...perRow[0]!.k, ...perRow[1]!.k])).toBeLessThan(1e-5);
    const unsteered = prefill();
    const plain = await values(model.forward(ids([[7], [8]]), { caches: unsteered }));
    expect(maxAbsDiff(plain, batchedLogits)).toBeGreaterThan(1e-3);
    for (const c of [...caches, ...fresh, ...alone, ...unsteered]) c.dispose();
    batched.logits.dispose();
    batched.cache.dispose();
    expect(model.hooks.size).toBe(0);
    model.dispose();
  });

  it('the residual chain, final norm and logits hooks agree with the forward pass', async () => {
    const model = adaptedModel(7);
    const input = [[9, 8, 7, 6], [1, 2, 3, 4]];
    const plain = await values(model.forward(ids(input)));
    const { logits, cache } = runWithCache(model, ids(input));
    expect(await values(logits)).toEqual(plain);
    expect(await values(cache.get(hookName.logits()))).toEqual(plain);
    expect(await values(cache.get(hookName.embed()))).toEqual(await values(cache.layer('resid_pre', 0)));
    for (let l = 0; l + 1 < config.numHiddenLayers; l++) {
      expect(await values(cache.layer('resid_post', l))).toEqual(await values(cache.layer('resid_pre', l + 1)));
    }
    for (let l = 0; l < config.numHiddenLayers; l++) {
      const [pre, mid, post] = await Promise.all(['resid_pre', 'resid_mid', 'resid_post'].map((k) => values(cache.layer(k, l))));
      const attnOut = await values(cache.layer('o_proj.output', l));
      const mlpOut = await values(cache.layer('down_proj.output', l));
      expect(maxAbsDiff(mid!, pre!.map((x, i) => x + attnOut[i]!))).toBeLessThan(1e-6);
      expect(maxAbsDiff(post!, mid!.map((x, i) => x + mlpOut[i]!))).toBeLessThan(1e-6);
    }
    const last = config.numHiddenLayers - 1;
    const normed = tidy(() => rmsNorm(cache.layer('resid_post', last), model.weights.norm, config.rmsNormEps));
    expect(maxAbsDiff(await values(cache.get(hookName.finalNorm())), await values(normed))).toBeLessThan(1e-6);
    const relogits = tidy(() => linear(cache.get(hookName.finalNorm()), model.weights.lmHead!));
    expect(maxAbsDiff(await values(relogits), plain)).toBeLessThan(1e-5);
    // The logits hook is what forward returns: replacing it replaces the result.
    const shifted = await values(withHooks(model, { [hookName.logits()]: steer(1) }, () => model.forward(ids(input))));
    expect(maxAbsDiff(shifted, plain.map((x) => x + 1))).toBeLessThan(1e-6);
    // With lastPositionOnly the final norm and logits hooks see one position.
    const shapes: number[][] = [];
    withHooks(model, [['model.norm.output', (v) => void shapes.push([...v.shape])], ['lm_head.output', (v) => void shapes.push([...v.shape])]],
      () => model.forward(ids(input), { lastPositionOnly: true }).dispose());
    expect(shapes).toEqual([[2, 1, 32], [2, 1, 64]]);
    for (const t of [logits, normed, relogits]) t.dispose();
    cache.dispose();
    model.dispose();
  });

  it('projection outputs include the adapter, and replacing one changes the logits', async () => {
    const model = adaptedModel(8);
    const input = ids([[3, 3, 7, 1, 12]]);
    const { logits, cache } = runWithCache(model, input);
    const base = await values(logits);
    // up_proj.output − x W_upᵀ = scale · (A·x) ⊗ B: the output hook runs after the adapter is added.
    const l = 1;
    const adapter = model.adapters!.get(l, 'up_proj')!;
    const x = tidy(() => rmsNorm(cache.layer('resid_mid', l), model.weights.layers[l]!.postAttentionLayernorm, config.rmsNormEps));
    const withoutAdapter = await values(tidy(() => linear(x, model.weights.layers[l]!.upProj.weight)));
    const activation = await values(cache.layer('up_proj', l)); // [1, T]
    const b = await values(adapter.b);
    const output = await values(cache.layer('up_proj.output', l));
    const expected = withoutAdapter.map((y, i) => y + model.adapters!.scale * activation[Math.floor(i / b.length)]! * b[i % b.length]!);
    expect(maxAbsDiff(output, expected)).toBeLessThan(1e-5);
    expect(maxAbsDiff(output, withoutAdapter)).toBeGreaterThan(1e-4);
    for (const projection of PROJECTIONS) {
      const ablated = await values(withHooks(model, { [hookName.projectionOutput(0, projection)]: zeroAblate }, () => model.forward(input)));
      expect(maxAbsDiff(ablated, base), projection).toBeGreaterThan(1e-3);
    }
    const z = await values(withHooks(model, { [hookName.z(0)]: zeroAblate }, () => model.forward(input)));
    expect(maxAbsDiff(z, base)).toBeGreaterThan(1e-3);
    x.dispose();
    logits.dispose();
    cache.dispose();
    model.dispose();
  });

  it('runWithCache: names, predicates, prefixes and single names select; unknown names throw; ids in any form', async () => {
    const model = adaptedModel(9);
    const sequence = [4, 5, 6];
    const all = listHookPoints(model.dims).map((p) => p.name);
    const select = (filter?: Parameters<typeof runWithCache>[2]) => {
      const { logits, cache } = runWithCache(model, sequence, filter);
      const names = cache.names;
      logits.dispose();
      cache.dispose();
      return names;
    };
    expect(select()).toEqual(all);
    expect(select([hookName.residPost(1), adapterHookName(0, 'q_proj')])).toEqual([adapterHookName(0, 'q_proj'), hookName.residPost(1)]);
    expect(select((name) => name.endsWith('.pattern'))).toEqual([hookName.pattern(0), hookName.pattern(1)]);
    const mlp1 = select('model.layers.1.mlp.*');
    expect(mlp1).toHaveLength(7);
    expect(mlp1.every((n) => n.startsWith('model.layers.1.mlp.'))).toBe(true);
    expect(select('lm_head.output')).toEqual(['lm_head.output']);
    expect(() => runWithCache(model, sequence, ['model.layers.9.resid_pre'])).toThrow(/not hook points of this model: model.layers.9.resid_pre/);
    expect(model.hooks.size).toBe(0);
    const plain = await values(model.forward(ids([sequence])));
    for (const form of [sequence, Int32Array.from(sequence), [sequence], ids([sequence])]) {
      const { logits, cache } = runWithCache(model, form, []);
      expect(cache.names).toEqual([]);
      expect(await values(logits)).toEqual(plain);
      logits.dispose();
    }
    model.dispose();
  });

  it('cache.layer and cache.adapters(): TransformerLens indexing and the paper order 7·l + j', async () => {
    const model = adaptedModel(10);
    const [B, T] = [2, 3];
    const { logits, cache } = runWithCache(model, ids([[1, 2, 3], [4, 5, 6]]));
    expect(cache).toBeInstanceOf(ActivationCache);
    expect(cache.adapterNames).toEqual(adapterHookNames(config.numHiddenLayers));
    expect(await values(cache.layer('q_proj', 1))).toEqual(await values(cache.get('model.layers.1.self_attn.q_proj')));
    expect(await values(cache.layer('mlp.act', 1))).toEqual(await values(cache.layer('mlp_act', 1)));
    expect(() => cache.layer('resid_post', 2)).toThrow(/outside \[0, 2\)/);
    const stacked = cache.adapters();
    const L7 = 7 * config.numHiddenLayers;
    expect(stacked.shape).toEqual([B, T, L7]);
    const flat = await values(stacked);
    for (let l = 0; l < config.numHiddenLayers; l++) {
      for (let j = 0; j < 7; j++) {
        const one = await values(cache.get(adapterHookName(l, PROJECTIONS[j]!)));
        for (let n = 0; n < B * T; n++) expect(flat[n * L7 + 7 * l + j]).toBe(one[n]);
      }
    }
    // Distinct adapters give distinct columns, so a wrong order would show.
    expect(flat[0]).not.toBe(flat[1]);
    stacked.dispose();
    const attentionOnly = runWithCache(model, ids([[1, 2, 3], [4, 5, 6]]), (name) => name.includes('self_attn'));
    expect(attentionOnly.cache.adapters().shape).toEqual([B, T, 8]);
    expect(attentionOnly.cache.adapterNames[4]).toBe(adapterHookName(1, 'q_proj'));
    attentionOnly.logits.dispose();
    attentionOnly.cache.dispose();
    cache.dispose();
    expect(cache.names).toEqual([]);
    logits.dispose();
    model.dispose();
  });

  it('installing no hooks gives bit-identical logits to reading every hook point (pattern included)', async () => {
    for (const withAdapters of [true, false]) {
      const model = withAdapters ? adaptedModel(11) : randomQwen2Model(config, 11, cpu);
      const input = ids([[1, 9, 2, 8, 3], [7, 4, 6, 5, 0]]);
      const plain = await values(model.forward(input));
      let reads = 0;
      const read = await values(withHooks(model, [['*', () => void reads++]], () => model.forward(input)));
      expect(reads).toBe(listHookPoints(model.dims).length - (withAdapters ? 0 : 7 * config.numHiddenLayers));
      expect(read).toEqual(plain);
      // Also across a KV cache step.
      const steps = await Promise.all([false, true].map(async (hooked) => {
        const kvCache = new KVCache(model.dims, 2, cpu);
        const run = () => [model.forward(ids([[1, 9, 2], [7, 4, 6]]), { cache: kvCache }), model.forward(ids([[8], [5]]), { cache: kvCache })];
        const outs = hooked ? withHooks(model, [['*', () => {}]], run) : run();
        const result = await Promise.all(outs.map(values));
        kvCache.dispose();
        return result.flatMap((r) => [...r]);
      }));
      expect(steps[1]).toEqual(steps[0]);
      model.dispose();
    }
  });
});
