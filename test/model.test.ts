// The Qwen2 model's mechanics on random tiny checkpoints: KV cache ≡ recomputation, hooks (list, record,
// replace, steer, scoped removal), adapters (PEFT round trip, bad files), generation.
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { klDivRows, mean, slice, tensor } from '../src/tensor/ops.ts';
import { tidy } from '../src/tensor/tensor.ts';
import { PROJECTIONS, adapterHookName, adapterHookNames, listHookPoints } from '../src/model/hooks.ts';
import { HookRecorder, steer, withHooks, zeroAblate } from '../src/model/hook-registry.ts';
import { LoraAdapters, PAPER_LORA } from '../src/model/lora.ts';
import { KVCache, type Qwen2Model } from '../src/model/qwen2.ts';
import { loadPeftAdapter, loadQwen2Checkpoint, peftConfigJson, peftKey, savePeftAdapter } from '../src/model/load.ts';
import { randomQwen2Model, randomRankOneAdapters, tinyQwen2Config, writeRandomQwen2Checkpoint } from '../src/model/random-model.ts';
import { generate } from '../src/model/generate.ts';
import { writeSafetensors } from '../src/model/safetensors.ts';

const cpu = getCpuBackend();
let dir: string;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-model-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

function ids(values: number[][]) {
  return tensor(Int32Array.from(values.flat()), [values.length, values[0]!.length], { backend: cpu, dtype: 'i32' });
}

/** Adapters with random non-zero B, so that they change the output. */
const randomAdapters = (model: Qwen2Model, seed: number): LoraAdapters => randomRankOneAdapters(model.dims, seed, cpu, 0.02);

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

describe('Qwen2 model mechanics', () => {
  const config = tinyQwen2Config();

  it('KV-cache decoding equals full recomputation, token by token', async () => {
    const model = randomQwen2Model(config, 1, cpu);
    model.adapters = randomAdapters(model, 5);
    const sequence = [3, 17, 42, 5, 9, 33, 60, 1];
    const full = await model.forward(ids([sequence])).toFloat32Array();
    const cache = new KVCache(model.dims, 1, cpu, 2); // tiny capacity: exercises growth
    const prompt = model.forward(ids([sequence.slice(0, 3)]), { cache });
    const V = config.vocabSize;
    expect(maxAbsDiff(await prompt.toFloat32Array(), full.slice(0, 3 * V))).toBeLessThan(1e-5);
    for (let t = 3; t < sequence.length; t++) {
      const step = model.forward(ids([[sequence[t]!]]), { cache, lastPositionOnly: true });
      expect(maxAbsDiff(await step.toFloat32Array(), full.slice(t * V, (t + 1) * V))).toBeLessThan(1e-5);
    }
    expect(cache.length).toBe(sequence.length);
    cache.dispose();
    model.dispose();
  });

  it('forward memory does not grow with depth (each layer frees its temporaries), with or without checkpointing', async () => {
    const { crossEntropy } = await import('../src/tensor/ops.ts');
    const { noGrad } = await import('../src/tensor/autograd.ts');
    const activationPeak = (layers: number, train: boolean) => {
      const model = randomQwen2Model(tinyQwen2Config({ numHiddenLayers: layers }), 30, cpu);
      model.adapters = randomAdapters(model, 31);
      model.gradientCheckpointing = true;
      const input = ids([Array.from({ length: 32 }, (_, i) => i)]);
      const base = cpu.memory().liveBytes;
      cpu.resetPeak();
      const out = tidy(() => (train ? crossEntropy(model.forward(input), input) : noGrad(() => model.forward(input))));
      const peak = cpu.memory().peakBytes - base;
      out.dispose();
      input.dispose();
      model.dispose();
      return peak;
    };
    for (const train of [false, true]) {
      const shallow = activationPeak(2, train);
      const deep = activationPeak(8, train);
      // Deeper models keep one [B, T, H] residual per layer (checkpointing), nothing more.
      expect(deep - shallow, train ? 'training' : 'inference').toBeLessThan(6 * 32 * 32 * 4 * 1.5);
    }
  });

  it('lists every hook point with its shape, 7L adapters in the paper order', () => {
    const points = listHookPoints(3, 32, 48);
    // The listing runs in forward order (attention's adapters first); adapterIndex gives the paper's order.
    const adapters = points.filter((p) => p.kind === 'adapter').sort((a, b) => a.adapterIndex! - b.adapterIndex!);
    expect(adapters).toHaveLength(21);
    expect(adapters.map((p) => p.name)).toEqual(adapterHookNames(3));
    expect(adapters[7 * 2 + 3]!.name).toBe('model.layers.2.self_attn.q_proj');
    expect(adapters[7 * 1 + 0]!.adapterIndex).toBe(7);
    expect(adapters[0]!.name).toBe('model.layers.0.mlp.gate_proj');
    expect(points.find((p) => p.name === 'model.layers.1.mlp.act')!.shape).toBe('[B, T, 48]');
    expect(adapterHookNames(64)).toHaveLength(448);
  });

  it('records adapter activations A·x equal to the adapter applied to the hooked input', async () => {
    const model = randomQwen2Model(config, 2, cpu);
    model.adapters = randomAdapters(model, 6);
    const recorder = new HookRecorder();
    withHooks(model, [['model.layers.*', recorder.hook]], () => model.forward(ids([[1, 2, 3, 4], [5, 6, 7, 8]])).dispose());
    expect(model.hooks.size).toBe(0); // removed after the call
    // gate_proj's activation = A · rmsNorm(resid_mid): recompute from the recorded residual.
    const { rmsNorm, matmul, reshape } = await import('../src/tensor/ops.ts');
    const layer = 1;
    const expected = tidy(() => {
      const x = rmsNorm(recorder.get(`model.layers.${layer}.resid_mid`), model.weights.layers[layer]!.postAttentionLayernorm, config.rmsNormEps);
      return reshape(matmul(x, reshape(model.adapters!.get(layer, 'gate_proj')!.a, [-1, 1])), [2, 4]);
    });
    const recorded = recorder.get(adapterHookName(layer, 'gate_proj'));
    expect(recorded.shape).toEqual([2, 4]);
    expect(maxAbsDiff(await recorded.toFloat32Array(), await expected.toFloat32Array())).toBeLessThan(1e-5);
    const state = recorder.stack(adapterHookNames(config.numHiddenLayers));
    expect(state.shape).toEqual([2, 4, 14]);
    const stateValues = await state.toFloat32Array();
    const recordedValues = await recorded.toFloat32Array();
    // index 7·layer + j, j = gate 0
    expect(stateValues[0 * 14 + 7]).toBeCloseTo(recordedValues[0]!, 6);
    recorder.dispose();
    model.dispose();
  });

  it('zero-ablating every adapter gives the base model; steering changes the output; hooks leave on error', async () => {
    const model = randomQwen2Model(config, 3, cpu);
    const input = [[4, 8, 15, 16, 23, 42]];
    const base = await model.forward(ids(input)).toFloat32Array();
    model.adapters = randomAdapters(model, 7);
    const adapted = await model.forward(ids(input)).toFloat32Array();
    expect(maxAbsDiff(adapted, base)).toBeGreaterThan(1e-3);
    const ablateAll = Object.fromEntries(adapterHookNames(config.numHiddenLayers).map((n) => [n, zeroAblate]));
    const ablated = await withHooks(model, ablateAll, () => model.forward(ids(input))).toFloat32Array();
    expect(maxAbsDiff(ablated, base)).toBeLessThan(1e-5);
    const steered = await withHooks(model, { [adapterHookName(0, 'q_proj')]: steer(50) }, () => model.forward(ids(input))).toFloat32Array();
    expect(maxAbsDiff(steered, adapted)).toBeGreaterThan(1e-3);
    expect(() => withHooks(model, { [adapterHookName(0, 'q_proj')]: () => { throw new Error('boom'); } }, () => model.forward(ids(input)))).toThrow('boom');
    expect(model.hooks.size).toBe(0);
    // KL(full ‖ ablated) is positive and finite.
    const kl = await tidy(() => {
      const full = model.forward(ids(input));
      const abl = withHooks(model, { [adapterHookName(1, 'v_proj')]: zeroAblate }, () => model.forward(ids(input)));
      return mean(klDivRows(full, abl));
    }).item();
    expect(kl).toBeGreaterThan(0);
    expect(Number.isFinite(kl)).toBe(true);
    model.dispose();
  });

  it('gradient checkpointing gives the same adapter gradients as keeping every activation', async () => {
    const { crossEntropy } = await import('../src/tensor/ops.ts');
    const { backward, zeroGrad } = await import('../src/tensor/autograd.ts');
    const model = randomQwen2Model(config, 9, cpu);
    model.adapters = randomAdapters(model, 10);
    const params = model.adapters.parameters();
    const input = ids([[1, 5, 9, 13, 17], [2, 4, 6, 8, 10]]);
    const targets = ids([[5, 9, 13, 17, 21], [4, 6, 8, 10, 12]]);
    model.checkpointDtype = 'f32'; // the exact recomputation (bf16, the default, rounds the kept inputs)
    const gradsWith = async (checkpointing: boolean) => {
      model.gradientCheckpointing = checkpointing;
      const loss = tidy(() => crossEntropy(model.forward(input), targets));
      backward(loss);
      const value = await loss.item();
      const grads = await Promise.all(params.map((p) => p.grad!.toFloat32Array()));
      zeroGrad(params);
      return { value, grads };
    };
    const plain = await gradsWith(false);
    const recomputed = await gradsWith(true);
    expect(recomputed.value).toBe(plain.value);
    let largest = 0;
    plain.grads.forEach((g, i) => {
      expect(maxAbsDiff(recomputed.grads[i]!, g)).toBeLessThan(1e-6);
      largest = Math.max(largest, ...Array.from(g, Math.abs));
    });
    expect(largest).toBeGreaterThan(1e-4); // the gradients are not trivially zero
    model.dispose();
  });

  it('rejects a hook that changes the shape', () => {
    const model = randomQwen2Model(config, 4, cpu);
    model.adapters = randomAdapters(model, 8);
    expect(() => withHooks(model, { [adapterHookName(0, 'k_proj')]: (v) => slice(v, 1, 0, 1) }, () => model.forward(ids([[1, 2, 3]]))))
      .toThrow(/hook at model.layers.0.self_attn.k_proj returned shape \[1, 1\], expected \[1, 3\]/);
    model.dispose();
  });
});

describe('checkpoints and PEFT adapters', () => {
  it('loads f32, bf16 and sharded checkpoints, keeping bf16 packed, with identical logits to the in-memory model', async () => {
    for (const [name, dtype, shards] of [['f32', 'f32', 1], ['bf16', 'bf16', 1], ['sharded', 'f32', 3]] as const) {
      const folder = path.join(dir, name);
      const config = tinyQwen2Config({ tieWordEmbeddings: name === 'bf16' });
      await writeRandomQwen2Checkpoint(folder, config, 11, cpu, { dtype, shards });
      const { model } = await loadQwen2Checkpoint(folder, cpu);
      expect(model.weights.embedTokens.dtype).toBe(dtype);
      const reference = randomQwen2Model(config, 11, cpu, dtype);
      const a = await model.forward(ids([[1, 2, 3]])).toFloat32Array();
      const b = await reference.forward(ids([[1, 2, 3]])).toFloat32Array();
      expect(Array.from(a)).toEqual(Array.from(b));
      model.dispose();
      reference.dispose();
    }
  });

  it('round-trips a PEFT adapter folder with PEFT key names, shapes and config', async () => {
    const config = tinyQwen2Config();
    const model = randomQwen2Model(config, 12, cpu);
    model.adapters = randomAdapters(model, 13);
    const before = await model.forward(ids([[5, 6, 7]])).toFloat32Array();
    const folder = path.join(dir, 'adapter');
    await savePeftAdapter(folder, model.adapters);
    const savedConfig = JSON.parse(await fs.readFile(path.join(folder, 'adapter_config.json'), 'utf8'));
    expect(savedConfig).toMatchObject({ peft_type: 'LORA', r: 1, lora_alpha: 16, use_rslora: true, task_type: 'CAUSAL_LM', bias: 'none' });
    expect(savedConfig.target_modules).toEqual([...PROJECTIONS]);
    const { readSafetensorsHeader } = await import('../src/model/safetensors.ts');
    const header = await readSafetensorsHeader(path.join(folder, 'adapter_model.safetensors'));
    expect(header.tensors.get('base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight')!.shape).toEqual([1, 32]);
    expect(header.tensors.get('base_model.model.model.layers.0.mlp.down_proj.lora_B.weight')!.shape).toEqual([32, 1]);
    expect(header.tensors.size).toBe(28);
    const fresh = randomQwen2Model(config, 12, cpu);
    await loadPeftAdapter(folder, fresh);
    expect(fresh.adapters!.scale).toBe(16);
    const after = await fresh.forward(ids([[5, 6, 7]])).toFloat32Array();
    expect(Array.from(after)).toEqual(Array.from(before));
    model.dispose();
    fresh.dispose();
  });

  it('gives clear errors for adapters it cannot load', async () => {
    const config = tinyQwen2Config({ numHiddenLayers: 1 });
    const model = randomQwen2Model(config, 14, cpu);
    const write = async (name: string, cfg: Record<string, unknown>, tensors: { name: string; shape: number[] }[]) => {
      const folder = path.join(dir, name);
      await fs.mkdir(folder, { recursive: true });
      await fs.writeFile(path.join(folder, 'adapter_config.json'), JSON.stringify(cfg));
      await writeSafetensors(path.join(folder, 'adapter_model.safetensors'), tensors.map((t) => ({
        name: t.name, dtype: 'F32' as const, shape: t.shape, data: new Float32Array(t.shape.reduce((a, b) => a * b, 1)),
      })));
      return folder;
    };
    const good = peftConfigJson({ ...PAPER_LORA, targetModules: ['q_proj'] });
    const pair = [{ name: peftKey(0, 'q_proj', 'A'), shape: [1, 32] }, { name: peftKey(0, 'q_proj', 'B'), shape: [32, 1] }];
    await expect(loadPeftAdapter(await write('r2', { ...good, r: 2 }, pair), model)).rejects.toThrow(/r is 2; rank1 works with rank-1 adapters only/);
    await expect(loadPeftAdapter(await write('unknown', { ...good, target_modules: ['q_proj', 'lm_head'] }, pair), model)).rejects.toThrow(/target_modules \["lm_head"\] are not Qwen2 projections/);
    await expect(loadPeftAdapter(await write('shape', good, [pair[0]!, { name: peftKey(0, 'q_proj', 'B'), shape: [32, 2] }]), model)).rejects.toThrow(/lora_B.weight" has shape \[32, 2\], expected \[32, 1\]/);
    await expect(loadPeftAdapter(await write('missing', good, [pair[0]!]), model)).rejects.toThrow(/lora_B weight is missing/);
    await expect(loadPeftAdapter(await write('layer', good, [...pair, { name: 'base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight', shape: [1, 32] }]), model)).rejects.toThrow(/layer 5 but the model has 1 layers/);
    await expect(loadPeftAdapter(path.join(dir, 'nowhere'), model)).rejects.toThrow(/adapter_config.json/);
    model.dispose();
  });
});

describe('generation', () => {
  it('greedy generation equals argmax of full recomputation and stops on stop ids', async () => {
    const model = randomQwen2Model(tinyQwen2Config(), 21, cpu);
    const prompt = [1, 2, 3];
    const streamed: number[] = [];
    const { ids: out, stopReason } = await generate(model, prompt, { maxTokens: 6, onToken: (id) => streamed.push(id) });
    expect(stopReason).toBe('max_tokens');
    expect(streamed).toEqual(out);
    const sequence = [...prompt];
    for (let i = 0; i < 6; i++) {
      const logits = await model.forward(ids([sequence])).toFloat32Array();
      const last = logits.slice((sequence.length - 1) * 64);
      sequence.push(last.indexOf(Math.max(...last)));
    }
    expect(out).toEqual(sequence.slice(3));
    const stopped = await generate(model, prompt, { maxTokens: 6, stopIds: [out[1]!] });
    expect(stopped.stopReason).toBe('stop_id');
    expect(stopped.ids).toEqual(out.slice(0, out.indexOf(out[1]!) + 1));
    const sampled = await generate(model, prompt, { maxTokens: 6, temperature: 1, topP: 0.9, seed: 3 });
    const again = await generate(model, prompt, { maxTokens: 6, temperature: 1, topP: 0.9, seed: 3 });
    expect(sampled.ids).toEqual(again.ids);
    await expect(generate(model, [99], { maxTokens: 1 })).rejects.toThrow(/prompt token 0 is 99, outside the vocabulary \[0, 64\)/);
    model.dispose();
  });

  it('batched generation (own cache and positions per sequence) equals generating each prompt alone', async () => {
    const { generateBatch } = await import('../src/model/generate.ts');
    const model = randomQwen2Model(tinyQwen2Config(), 24, cpu);
    model.adapters = randomAdapters(model, 25);
    const prompts = [[1, 2, 3], [9, 8, 7, 6, 5, 4], [11], [20, 21]];
    const alone = await Promise.all(prompts.map((p) => generate(model, p, { maxTokens: 7 })));
    const stopIds = [alone[1]!.ids[2]!]; // one sequence stops early, the others go on without it
    const aloneWithStop = [];
    for (const p of prompts) aloneWithStop.push(await generate(model, p, { maxTokens: 7, stopIds }));
    const batched = await generateBatch(model, prompts, { maxTokens: 7, stopIds });
    expect(batched).toEqual(aloneWithStop);
    expect(batched.some((r) => r.stopReason === 'stop_id')).toBe(true);
    expect(batched.some((r) => r.stopReason === 'max_tokens')).toBe(true);
    model.dispose();
  });

  it('hooks see every token during generation: recorded activations equal a full forward over the sequence', async () => {
    const model = randomQwen2Model(tinyQwen2Config(), 22, cpu);
    model.adapters = randomAdapters(model, 23);
    const prompt = [7, 8, 9, 10];
    const recorder = new HookRecorder();
    const offsets: number[] = [];
    const name = adapterHookName(1, 'down_proj');
    const { ids: out } = await withHooks(model, [[name, recorder.hook], [name, (_v, ctx) => void offsets.push(ctx.positionOffset)]], () =>
      generate(model, prompt, { maxTokens: 5 }));
    expect(offsets).toEqual([0, 4, 5, 6, 7]); // the prompt, then one token per step
    const streamed = await recorder.get(name).toFloat32Array(); // [1, 4 + 4]: the last token is never fed back
    const full = new HookRecorder();
    withHooks(model, { [name]: full.hook }, () => model.forward(ids([[...prompt, ...out.slice(0, -1)]])).dispose());
    expect(maxAbsDiff(streamed, await full.get(name).toFloat32Array())).toBeLessThan(1e-5);
    recorder.dispose();
    full.dispose();
    model.dispose();
  });
});
