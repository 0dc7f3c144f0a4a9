// The BatchTopK SAE on the tensor engine: its selection, decoder norms and dead-latent bookkeeping as
// properties, and recovery of a known sparse dictionary from synthetic data.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { narrowFromF32 } from '../src/kernels/dtype.ts';
import { readSafetensorsHeader, readTensorData, writeSafetensors } from '../src/model/safetensors.ts';
import { safetensorsSource } from '../src/interp/sae-data.ts';
import { readSaeFolder } from '../src/interp/sae-folder.ts';
import { trainSae } from '../src/interp/sae-train.ts';
import { probeForTests, registerRequiredFailure } from './webgpu-helpers.ts';
import { loadQwen2Checkpoint, savePeftAdapter } from '../src/model/load.ts';
import { LoraAdapters, projectionDims } from '../src/model/lora.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { tensor } from '../src/tensor/ops.ts';
import { Random } from '../src/tensor/random.ts';
import { AdamW } from '../src/train/adamw.ts';
import { BatchTopKSae, defaultSaeConfig } from '../src/interp/sae.ts';

const backend = getCpuBackend();
const adam = (sae: BatchTopKSae, lr = 5e-4) => new AdamW(sae.parameters(), { lr, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 });

/** Tokens x = codes · D of a random unit dictionary D [F, d], `active` latents per token with values in [0.5, 2]. */
function sparseData(dictionary: Float32Array, F: number, d: number, tokens: number, active: number, rng: Random): Float32Array {
  const x = new Float32Array(tokens * d);
  for (let t = 0; t < tokens; t++) {
    for (let a = 0; a < active; a++) {
      const f = rng.int(F);
      const value = 0.5 + 1.5 * rng.uniform();
      for (let j = 0; j < d; j++) x[t * d + j]! += value * dictionary[f * d + j]!;
    }
  }
  return x;
}

function unitDictionary(F: number, d: number, rng: Random): Float32Array {
  const D = Float32Array.from({ length: F * d }, () => rng.normal());
  for (let f = 0; f < F; f++) {
    const norm = Math.hypot(...D.subarray(f * d, (f + 1) * d));
    for (let j = 0; j < d; j++) D[f * d + j]! /= norm;
  }
  return D;
}

describe('BatchTopK SAE', () => {
  it('training keeps exactly k·B latents per batch (those with positive pre-activation fire), decoder rows stay unit norm', async () => {
    await fc.assert(fc.asyncProperty(fc.integer({ min: 2, max: 12 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 16 }), fc.integer({ min: 0, max: 1 << 30 }),
      async (d, k, batch, seed) => {
        const sae = new BatchTopKSae(defaultSaeConfig(d, { expansion: 2, k: Math.min(k, 2 * d) }), backend, seed);
        const rng = new Random(seed);
        const x = Float32Array.from({ length: batch * d }, () => rng.normal());
        const { mask } = sae.encodeBatchTopK(tensor(x, [batch, d], { backend }));
        const ones = (await mask.toFloat32Array()).reduce((a, b) => a + b, 0);
        expect(ones).toBe(Math.min(sae.config.k * batch, batch * sae.config.latents));
        const optimizer = adam(sae, 1e-2);
        for (let step = 0; step < 3; step++) {
          await sae.trainStep(x, batch, optimizer, 1e-2);
          const norms = await sae.decoderNorms().toFloat32Array();
          for (const n of norms) expect(n).toBeCloseTo(1, 5);
        }
        sae.dispose();
        optimizer.dispose();
      }), { numRuns: 20 });
  });

  it('trains on ReLU(pre) of the selected latents: its mse equals decode(encodeBatchTopK(x)) where selected latents are negative (fast-check)', async () => {
    // Training folds the ReLU into the decoder's mask (pre ⊙ firing, sae.ts loss): a selected latent with
    // pre < 0 must add nothing to x̂, exactly as the dense ReLU(pre) ⊙ mask of encodeBatchTopK.
    let withNegatives = 0;
    await fc.assert(fc.asyncProperty(fc.integer({ min: 3, max: 10 }), fc.integer({ min: 2, max: 12 }), fc.integer({ min: 0, max: 1 << 30 }), async (d, batch, seed) => {
      const sae = new BatchTopKSae(defaultSaeConfig(d, { expansion: 2, k: Math.ceil(1.5 * d) }), backend, seed); // 3/4 of the latents selected
      const rng = new Random(seed);
      const x = Float32Array.from({ length: batch * d }, () => rng.normal());
      const optimizer = adam(sae, 0);
      const { mse } = await sae.trainStep(x, batch, optimizer, 0); // lr 0: the weights stay as the step saw them
      const input = tensor(x, [batch, d], { backend });
      const { latents, pre, mask } = sae.encodeBatchTopK(input);
      const [p, m] = [await pre.toFloat32Array(), await mask.toFloat32Array()];
      const reconstruction = await sae.decode(latents).toFloat32Array();
      let sumSquares = 0;
      for (let i = 0; i < x.length; i++) sumSquares += (x[i]! - reconstruction[i]!) ** 2;
      expect(Math.abs(mse - sumSquares / batch)).toBeLessThan(1e-4 * (1 + sumSquares / batch));
      if (p.some((value, i) => m[i] === 1 && value < 0)) withNegatives++;
      sae.dispose();
      optimizer.dispose();
    }), { numRuns: 30 });
    expect(withNegatives).toBeGreaterThanOrEqual(20); // the case that matters (in nearly every run: 3/4 selected)
  });

  it('counts latents that never fire as dead after deadAfterTokens, and the auxiliary loss then works on them', async () => {
    // Latents alive or dead by construction (lr 0, so the weights never move): latent f < 4 reads input f
    // (pre_f = x_f / 2, decoder row e_f); latents 4..7 read nothing and sit at pre −10, so they never fire.
    // Each batch is 8 tokens t·e_i (t = 1..8) on chosen inputs i, so exactly the latents of those inputs fire
    // (k·B = 8 selections, one positive score per token).
    const d = 4;
    const F = 8;
    const wEnc = new Float32Array(d * F);
    const wDec = new Float32Array(F * d);
    const bEnc = new Float32Array(F);
    for (let f = 0; f < 4; f++) {
      wEnc[f * F + f] = 0.5;
      wDec[f * d + f] = 1;
      wDec[(f + 4) * d + f] = 1;
      bEnc[f + 4] = -10;
    }
    const sae = new BatchTopKSae(defaultSaeConfig(d, { expansion: 2, k: 1, deadAfterTokens: 16 }), backend, 3, { wEnc, bEnc, wDec, bDec: new Float32Array(d) });
    const optimizer = adam(sae, 0);
    const batchOn = (...inputs: number[]) => {
      const x = new Float32Array(8 * d);
      for (let t = 0; t < 8; t++) x[t * d + inputs[t % inputs.length]!] = t + 1;
      return x;
    };
    // tokens since each latent fired, after each step, worked out by hand:
    const first = await sae.trainStep(batchOn(0, 1), 8, optimizer, 0); // [0, 0, 8, 8, 8, 8, 8, 8]
    expect(first.dead).toBe(0); // 8 tokens seen: nobody is dead yet
    expect(first.aux).toBe(0);
    expect(first.l0).toBe(1);
    const second = await sae.trainStep(batchOn(2, 3), 8, optimizer, 0); // [8, 8, 0, 0, 16, 16, 16, 16]
    expect(second.dead).toBe(4); // latents 4..7: built never to fire
    expect(second.aux).toBe(0); // the auxiliary loss sees the latents dead before the step: none yet
    const third = await sae.trainStep(batchOn(0), 8, optimizer, 0); // [0, 16, 8, 8, 24, 24, 24, 24]
    expect(third.dead).toBe(5); // latent 1 has now sat out 16 tokens too
    // The residual e = x/2 = (t/2)·e_0, and the dead latents (pre −10, ReLU 0) reconstruct none of it:
    // mse = mean ‖e‖² = 25.5/4, aux = mean ‖e‖² / mean ‖e − ē‖² = mean t² / var t = 25.5 / 5.25.
    expect(third.mse).toBeCloseTo(25.5 / 4, 4);
    expect(third.aux).toBeCloseTo(25.5 / 5.25, 4);
    expect(third.loss).toBeCloseTo(25.5 / 4 + 25.5 / 5.25 / 32, 4);
    const fourth = await sae.trainStep(batchOn(1, 0), 8, optimizer, 0); // [0, 0, 16, 16, 32, 32, 32, 32]
    expect(fourth.dead).toBe(6); // latent 1 fired again; latents 2 and 3 are now dead
    expect(Array.from(sae.tokensSinceFired)).toEqual([0, 0, 16, 16, 32, 32, 32, 32]);
    expect(Number.isFinite(fourth.loss)).toBe(true);
    sae.dispose();
    optimizer.dispose();
  });

  it('recovers a known sparse dictionary (mean best |cosine| ≥ 0.9) and learns a threshold that keeps L0 near k', async () => {
    const d = 16;
    const F = 24;
    const rng = new Random(11);
    const truth = unitDictionary(F, d, rng);
    const data = sparseData(truth, F, d, 60_000, 2, rng);
    const sae = new BatchTopKSae(defaultSaeConfig(d, { expansion: 3, k: 2, thresholdStartStep: 200, deadAfterTokens: 20_000 }), backend, 5);
    const optimizer = adam(sae, 5e-3);
    const batch = 256;
    let last = { mse: Infinity, l0: 0 };
    for (let epoch = 0; epoch < 3; epoch++) {
      for (let start = 0; start + batch <= 60_000; start += batch) {
        last = await sae.trainStep(data.subarray(start * d, (start + batch) * d), batch, optimizer, 5e-3);
      }
    }
    const learned = await sae.wDec.toFloat32Array(); // [3F, d]
    let total = 0;
    for (let f = 0; f < F; f++) {
      let best = 0;
      for (let g = 0; g < sae.config.latents; g++) {
        let dot = 0;
        for (let j = 0; j < d; j++) dot += truth[f * d + j]! * learned[g * d + j]!;
        best = Math.max(best, Math.abs(dot));
      }
      total += best;
    }
    expect(total / F).toBeGreaterThanOrEqual(0.9);
    expect(last.l0).toBeCloseTo(2, 5); // batch top-k: k·B selected, all positive here
    expect(sae.threshold).toBeGreaterThan(0);
    // Per-token inference with the learned threshold: L0 near k on fresh data.
    const fresh = sparseData(truth, F, d, 512, 2, rng);
    const codes = await sae.encode(tensor(fresh, [512, d], { backend }), 'threshold').toFloat32Array();
    const l0 = codes.reduce((n, v) => n + (v > 0 ? 1 : 0), 0) / 512;
    expect(l0).toBeGreaterThan(1);
    expect(l0).toBeLessThan(4);
    sae.dispose();
    optimizer.dispose();
  }, 120_000);
});

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '..');
const rank1 = (...args: string[]) => run(process.execPath, [path.join(root, 'bin/rank1.js'), ...args], { cwd: root, maxBuffer: 64 << 20 });

describe('rank1 sae train', () => {
  async function inputFile(dir: string, tokens: number, d: number, dtype: 'F32' | 'F16'): Promise<{ file: string; truth: Float32Array }> {
    const rng = new Random(4);
    const truth = unitDictionary(12, d, rng);
    const data = sparseData(truth, 12, d, tokens, 2, rng);
    const file = path.join(dir, `acts-${dtype}.safetensors`);
    await writeSafetensors(file, [{ name: 'activations', dtype, shape: [tokens, d], data: dtype === 'F32' ? data : narrowFromF32(data, 'f16') }]);
    return { file, truth };
  }

  it('resumes exactly: stopped after 7 steps and resumed, the weights equal an uninterrupted run', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-sae-'));
    try {
      const { file } = await inputFile(dir, 3000, 8, 'F32');
      const source = await safetensorsSource(file);
      const base = {
        source, backend, config: defaultSaeConfig(8, { expansion: 2, k: 2, deadAfterTokens: 500 }), expansion: 2, batch: 64, lr: 1e-2,
        warmupSteps: 5, epochs: 2, seed: 3, inference: 'threshold' as const, saveEvery: 1000, bufferRows: 256,
      };
      const whole = await trainSae({ ...base, out: path.join(dir, 'whole') });
      let steps = 0;
      const stopped = await trainSae({ ...base, out: path.join(dir, 'parts'), shouldStop: () => ++steps >= 7 });
      expect(stopped).toBeNull();
      const resumed = await trainSae({ ...base, out: path.join(dir, 'parts'), resume: path.join(dir, 'parts') });
      expect(resumed!.steps).toBe(whole!.steps);
      expect(resumed!.fvu).toBe(whole!.fvu);
      const a = await readSaeFolder(path.join(dir, 'whole'), backend);
      const b = await readSaeFolder(path.join(dir, 'parts'), backend);
      for (const name of ['wEnc', 'bEnc', 'wDec', 'bDec'] as const) expect(Array.from(await b.sae[name].toFloat32Array())).toEqual(Array.from(await a.sae[name].toFloat32Array()));
      expect(b.sae.threshold).toBe(a.sae.threshold);
      const lines = (file: string) => fs.readFile(file, 'utf8').then((t) => t.trim().split('\n'));
      expect(await lines(path.join(dir, 'parts', 'metrics.jsonl'))).toEqual(await lines(path.join(dir, 'whole', 'metrics.jsonl')));
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('the command reads a user\'s F16 --input file and writes the folder; bad inputs are named', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-sae-cli-'));
    try {
      const { file } = await inputFile(dir, 4000, 8, 'F16');
      const out = path.join(dir, 'sae');
      const { stderr } = await rank1('sae', 'train', '--input', file, '--out', out, '--batch', '64', '--k', '2', '--expansion', '3', '--lr', '5e-3', '--epochs', '3', '--warmup', '10', '--backend', 'cpu', '--no-progress');
      expect(stderr).toMatch(/held-out FVU 0\.\d+, L0 \d/);
      const metrics = JSON.parse(await fs.readFile(path.join(out, 'metrics.json'), 'utf8'));
      expect(metrics.fvu).toBeLessThan(0.5);
      expect(metrics.live + metrics.dead).toBe(24);
      const config = JSON.parse(await fs.readFile(path.join(out, 'config.json'), 'utf8'));
      expect(config).toMatchObject({ format: 'rank1-sae', d: 8, latents: 24, k: 2, batch: 64, variant: 'standard', inference: 'threshold' });
      await fs.access(path.join(out, 'loss-curve.svg'));
      // The SAELens export: a JumpReLU with per-latent thresholds gives rank1's per-token latents.
      const lens = path.join(dir, 'saelens');
      await rank1('sae', 'export', '--sae', out, '--out', lens);
      const cfg = JSON.parse(await fs.readFile(path.join(lens, 'cfg.json'), 'utf8'));
      expect(cfg).toMatchObject({ architecture: 'jumprelu', d_in: 8, d_sae: 24, apply_b_dec_to_input: true });
      const header = await readSafetensorsHeader(path.join(lens, 'sae_weights.safetensors'));
      const weight = async (name: string) => await readTensorData(path.join(lens, 'sae_weights.safetensors'), header.tensors.get(name)!) as Float32Array;
      const [wEnc, bEnc, bDec, theta] = [await weight('W_enc'), await weight('b_enc'), await weight('b_dec'), await weight('threshold')];
      const { sae } = await readSaeFolder(out, backend);
      const rows = sparseData(unitDictionary(12, 8, new Random(9)), 12, 8, 32, 2, new Random(10));
      const ours = await sae.encode(tensor(rows, [32, 8], { backend }), 'threshold').toFloat32Array();
      for (let r = 0; r < 32; r++) {
        for (let f = 0; f < 24; f++) {
          let pre = bEnc[f]!;
          for (let j = 0; j < 8; j++) pre += (rows[r * 8 + j]! - bDec[j]!) * wEnc[j * 24 + f]!;
          const jump = pre > theta[f]! ? pre : 0;
          expect(Math.abs(jump - ours[r * 24 + f]!)).toBeLessThan(1e-4);
        }
      }
      sae.dispose();
      const bad = path.join(dir, 'bad.safetensors');
      await writeSafetensors(bad, [{ name: 'x', dtype: 'F32', shape: [2, 2], data: new Float32Array(4) }]);
      await expect(rank1('sae', 'train', '--input', bad, '--out', path.join(dir, 'o2'), '--backend', 'cpu')).rejects.toMatchObject({ stderr: expect.stringMatching(/bad\.safetensors: no tensor named "activations"/) });
      await expect(rank1('sae', 'train', '--input', file, '--store', dir, '--out', path.join(dir, 'o3'), '--backend', 'cpu')).rejects.toMatchObject({ stderr: expect.stringMatching(/exactly one of --store STORE or --input/) });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

const gpuProbe = await probeForTests('sae');
registerRequiredFailure(gpuProbe.reason);

describe.skipIf(!gpuProbe.backend)('BatchTopK SAE on WebGPU', () => {
  it('three training steps equal the CPU backend\'s (same selections, weights within 1e-4)', async () => {
    const gpu = gpuProbe.backend!;
    const d = 12;
    const rng = new Random(8);
    const batches = Array.from({ length: 3 }, () => Float32Array.from({ length: 32 * d }, () => rng.normal()));
    const run = async (b: typeof backend) => {
      const sae = new BatchTopKSae(defaultSaeConfig(d, { expansion: 4, k: 3, deadAfterTokens: 40, thresholdStartStep: 1 }), b, 2);
      // eps 1e-4, not 1e-8: Adam's first step moves every parameter by ≈ lr·sign(g), so with eps 1e-8 a gradient
      // element that is zero up to rounding (≈1e-8) moves by a full ±lr, and which sign it gets depends on the
      // last bits of the matmul (the relaxed-SIMD fma kernel and mul+add already disagree on one by 3e-4 in the
      // next step's mse). A larger eps keeps that rounding noise from being amplified, nothing else.
      const optimizer = new AdamW(sae.parameters(), { lr: 1e-2, betas: [0.9, 0.999], eps: 1e-4, weightDecay: 0 });
      const stats = [];
      for (const x of batches) stats.push(await sae.trainStep(x, 32, optimizer, 1e-2));
      const weights = await Promise.all(sae.parameters().map((p) => p.toFloat32Array()));
      const result = { stats, weights, threshold: sae.threshold, since: Array.from(sae.tokensSinceFired) };
      sae.dispose();
      optimizer.dispose();
      return result;
    };
    const onCpu = await run(backend);
    const onGpu = await run(gpu);
    expect(onGpu.since).toEqual(onCpu.since); // the same latents fired at every step
    onGpu.stats.forEach((s, i) => {
      expect(s.l0).toBe(onCpu.stats[i]!.l0);
      expect(s.dead).toBe(onCpu.stats[i]!.dead);
      expect(s.mse).toBeCloseTo(onCpu.stats[i]!.mse, 4);
      expect(s.aux).toBeCloseTo(onCpu.stats[i]!.aux, 4);
    });
    onGpu.weights.forEach((w, i) => {
      const ref = onCpu.weights[i]!;
      let worst = 0;
      for (let j = 0; j < w.length; j++) worst = Math.max(worst, Math.abs(w[j]! - ref[j]!));
      expect(worst).toBeLessThan(1e-4);
    });
    expect(onGpu.threshold).toBeCloseTo(onCpu.threshold, 4);
  });
});

describe('the SAE on the toy world', () => {
  it('trains on a store of the shipped base with a rank-1 adapter, reports finite metrics, and lists latents with their adapters', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-sae-toy-'));
    try {
      const toy = path.join(root, 'models/toy');
      const { model } = await loadQwen2Checkpoint(toy, backend);
      const dims = model.dims;
      const adapters = LoraAdapters.initialize(dims.layers, projectionDims(dims.hidden, dims.intermediate, dims.heads, dims.kvHeads, dims.headDim), new Random(1), backend);
      await savePeftAdapter(path.join(dir, 'adapter'), adapters);
      model.dispose();
      const traces = path.join(dir, 'traces.jsonl');
      await fs.writeFile(traces, Array.from({ length: 6 }, (_, i) => JSON.stringify({
        question: `Start with ${i + 2}, then (1) +${i + 1}, (2) *3. What is the last digit of the result?`,
        deepseek_thinking_trajectory: `Okay, let me work through this step by step.\nStart: ${i + 2}.\n(1) +${i + 1}: ${i + 2} + ${i + 1} = ${2 * i + 3}, last digit ${(2 * i + 3) % 10}.\nSo the last digit is ${(3 * (2 * i + 3)) % 10}.`,
        deepseek_attempt: `The last digit is \\boxed{${(3 * (2 * i + 3)) % 10}}.`,
      })).join('\n'));
      const store = path.join(dir, 'store');
      await rank1('extract', '--model', toy, '--adapter', path.join(dir, 'adapter'), '--data', traces, '--out', store, '--backend', 'cpu', '--no-progress');
      const out = path.join(dir, 'sae');
      await rank1('sae', 'train', '--store', store, '--out', out, '--batch', '64', '--k', '4', '--expansion', '2', '--epochs', '4', '--warmup', '2', '--lr', '5e-3', '--backend', 'cpu', '--no-progress');
      const metrics = JSON.parse(await fs.readFile(path.join(out, 'metrics.json'), 'utf8'));
      for (const key of ['fvu', 'l0', 'dead', 'live', 'steps']) expect(Number.isFinite(metrics[key]), key).toBe(true);
      expect(metrics.live + metrics.dead).toBe(56);
      const config = JSON.parse(await fs.readFile(path.join(out, 'config.json'), 'utf8'));
      expect(config.columns[3]).toBe('model.layers.0.self_attn.q_proj');
      const features = path.join(dir, 'features');
      await rank1('sae', 'features', '--sae', out, '--store', store, '--out', features, '--k', '5', '--backend', 'cpu');
      const lines = (await fs.readFile(path.join(features, 'features.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
      expect(lines.length).toBeGreaterThan(0);
      for (const f of lines) {
        expect(f.feature).toBe(`sae_${f.latent}`);
        expect(f.examples.length).toBeGreaterThan(0);
        expect(f.examples[0].value).toBeGreaterThan(0);
        expect(f.decoder[0].hook).toMatch(/^model\.layers\.\d\.(self_attn|mlp)\.\w+_proj$/);
        expect(Math.abs(f.decoder[0].weight)).toBeGreaterThanOrEqual(Math.abs(f.decoder.at(-1).weight));
      }
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe('the paper\'s SAE variant', () => {
  it('keeps negative latents (no ReLU), never renormalises the decoder, and still reconstructs', async () => {
    const d = 8;
    const sae = new BatchTopKSae(defaultSaeConfig(d, { expansion: 2, k: 2, variant: 'paper' }), backend, 4);
    const optimizer = adam(sae, 2e-2);
    const rng = new Random(6);
    const truth = unitDictionary(6, d, rng);
    let first = Infinity;
    let last = Infinity;
    for (let step = 0; step < 150; step++) {
      const stats = await sae.trainStep(sparseData(truth, 6, d, 64, 1, rng), 64, optimizer, 2e-2);
      if (step === 0) first = stats.mse;
      last = stats.mse;
    }
    expect(last).toBeLessThan(first / 2);
    const norms = await sae.decoderNorms().toFloat32Array();
    expect(norms.some((n) => Math.abs(n - 1) > 1e-3)).toBe(true);
    // With every pre-activation negative, the selected latents stay negative: no ReLU after the selection.
    backend.assign(sae.bEnc, tensor(new Float32Array(sae.config.latents).fill(-100), [sae.config.latents], { backend }));
    const x = tensor(Float32Array.from({ length: 16 * d }, () => rng.normal()), [16, d], { backend });
    const latents = await sae.encode(x).toFloat32Array(); // batch top-k: the paper's inference
    expect(latents.filter((v) => v !== 0).length).toBe(2 * 16);
    expect(latents.every((v) => v <= 0)).toBe(true);
    sae.dispose();
    optimizer.dispose();
  });
});
