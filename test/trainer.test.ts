// Training end to end on a tiny model and a synthetic task: loss goes down on held-out data, only adapters
// change, resume reproduces the uninterrupted loss curve step for step, Ctrl-C saves, NaN stops.
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { tensor } from '../src/tensor/ops.ts';
import { loadPeftAdapter, modelTensors } from '../src/model/load.ts';
import type { Qwen2Model } from '../src/model/qwen2.ts';
import { randomQwen2Model, tinyQwen2Config } from '../src/model/random-model.ts';
import { makeBatch } from '../src/train/data-batch.ts';
import type { TokenizedExample } from '../src/train/data-rows.ts';
import { syntheticRows } from '../src/train/data-synthetic.ts';
import { tokenizeRows } from '../src/train/data.ts';
import { PAPER_TRAINING, meanBatchLoss, train, type TrainSettings } from '../src/train/trainer.ts';
import { cosineWithWarmup, warmupSteps } from '../src/train/schedule.ts';

const cpu = getCpuBackend();
const config = tinyQwen2Config({ vocabSize: 32 });
let dir: string;
const trainSet = tokenizeRows(syntheticRows(24, 1, { vocabSize: 32, minLength: 10, maxLength: 14 }), null);
const heldOut = tokenizeRows(syntheticRows(8, 2, { vocabSize: 32, minLength: 10, maxLength: 14 }), null);

const settings: TrainSettings = {
  ...PAPER_TRAINING, epochs: 6, batchSize: 4, microBatch: 2, lr: 2e-2, saveEvery: 4, keepCheckpoints: 0, seed: 7,
  gradientCheckpointing: true,
};

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-train-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const meanLoss = (model: Qwen2Model, examples: readonly TokenizedExample[]) => meanBatchLoss(model, makeBatch(examples, 0));

const quiet = { log: () => {} };

describe('schedule', () => {
  it('is Hugging Face cosine-with-warmup', () => {
    expect(warmupSteps(100, 0.05)).toBe(5);
    expect(cosineWithWarmup(0, 100, 0.05, 1e-3)).toBe(0);
    expect(cosineWithWarmup(4, 100, 0.05, 1e-3)).toBeCloseTo(8e-4, 12);
    expect(cosineWithWarmup(5, 100, 0.05, 1e-3)).toBeCloseTo(1e-3, 12);
    expect(cosineWithWarmup(52.5, 100, 0.05, 1e-3)).toBeCloseTo(5e-4, 12);
    expect(cosineWithWarmup(100, 100, 0.05, 1e-3)).toBeCloseTo(0, 12);
  });
});

describe('train', () => {
  it('lowers held-out loss, changes only the adapters, and writes a PEFT folder, metrics and a loss curve', async () => {
    const model = randomQwen2Model(config, 3, cpu);
    const baseBefore = new Map<string, Uint16Array | Float32Array | Int32Array>();
    for (const [name, t] of modelTensors(model)) baseBefore.set(name, await cpu.readRaw(t.storage));
    const before = await meanLoss(model, heldOut);
    const outDir = path.join(dir, 'run');
    const result = await train(model, trainSet, settings, { outDir, ...quiet });
    expect(result.outcome).toBe('completed');
    expect(result.steps).toBe(36); // 6 epochs × 24 examples / batch 4
    const after = await meanLoss(model, heldOut);
    expect(after).toBeLessThan(before * 0.6);
    for (const [name, t] of modelTensors(model)) {
      expect(Array.from(await cpu.readRaw(t.storage)), name).toEqual(Array.from(baseBefore.get(name)!));
    }
    const files = await fs.readdir(outDir);
    expect(files).toEqual(expect.arrayContaining(['adapter_config.json', 'adapter_model.safetensors', 'metrics.jsonl', 'loss-curve.svg', 'checkpoint-36']));
    const metrics = (await fs.readFile(path.join(outDir, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics).toHaveLength(36);
    expect(metrics[0].lr).toBe(0); // warmup starts at 0, as in transformers
    expect((await fs.readFile(path.join(outDir, 'loss-curve.svg'), 'utf8')).startsWith('<svg')).toBe(true);
    // The saved adapter reproduces the trained model.
    const reloaded = randomQwen2Model(config, 3, cpu);
    await loadPeftAdapter(outDir, reloaded);
    expect(await meanLoss(reloaded, heldOut)).toBe(after);
    model.dispose();
    reloaded.dispose();
  });

  it('resumes after an interruption with the same loss curve, step for step', async () => {
    const full = await train(randomQwen2Model(config, 4, cpu), trainSet, { ...settings, maxSteps: 12 }, { outDir: path.join(dir, 'full'), ...quiet });
    const outDir = path.join(dir, 'interrupted');
    let steps = 0;
    const first = await train(randomQwen2Model(config, 4, cpu), trainSet, { ...settings, maxSteps: 12 }, {
      outDir, ...quiet, onStep: () => steps++, shouldStop: () => steps >= 6,
    });
    expect(first.outcome).toBe('interrupted');
    expect(first.steps).toBe(6);
    const resumed = await train(randomQwen2Model(config, 4, cpu), trainSet, { ...settings, maxSteps: 12 }, { outDir, resume: outDir, ...quiet });
    expect(resumed.outcome).toBe('completed');
    expect(resumed.metrics.map((m) => m.loss)).toEqual(full.metrics.map((m) => m.loss));
    expect(resumed.metrics.map((m) => m.gradNorm)).toEqual(full.metrics.map((m) => m.gradNorm));
  });

  it('refuses to resume with different settings', async () => {
    const outDir = path.join(dir, 'interrupted');
    await expect(train(randomQwen2Model(config, 4, cpu), trainSet, { ...settings, maxSteps: 12, lr: 1e-3 }, { outDir, resume: outDir, ...quiet }))
      .rejects.toThrow(/lr was 0.02, now 0.001/);
  });

  it('stops on a non-finite loss, naming the step, without updating', async () => {
    const model = randomQwen2Model(config, 5, cpu);
    const outDir = path.join(dir, 'nan');
    const poisoned = tensor(new Float32Array([Number.NaN]), [1], { backend: cpu });
    // Poison the final norm after the first few steps.
    let steps = 0;
    await expect(train(model, trainSet, { ...settings, maxSteps: 10, saveEvery: 2 }, {
      outDir, ...quiet,
      onStep: () => {
        if (++steps === 3) cpu.assign({ ...model.weights.norm, shape: [1], strides: [1], offset: 0, storage: model.weights.norm.storage }, poisoned);
      },
    })).rejects.toThrow(/loss became NaN .* at step 4/);
    expect(await fs.readdir(outDir)).toContain('checkpoint-2');
  });

  it('resumes a full finetune exactly', async () => {
    const { writeCheckpoint } = await import('../src/model/checkpoint.ts');
    const full = { ...settings, mode: 'full' as const, lr: 3e-3, maxSteps: 8, saveEvery: 4 };
    const writer = (model: Qwen2Model) => (d: string) => writeCheckpoint(d, { ...config, torchDtype: 'float32' }, modelTensors(model), { dtype: 'f32' });
    const straightModel = randomQwen2Model(config, 8, cpu);
    const straight = await train(straightModel, trainSet, full, { outDir: path.join(dir, 'full-straight'), ...quiet }, writer(straightModel));
    const outDir = path.join(dir, 'full-resumed');
    let steps = 0;
    const firstModel = randomQwen2Model(config, 8, cpu);
    await train(firstModel, trainSet, full, { outDir, ...quiet, onStep: () => steps++, shouldStop: () => steps >= 4 }, writer(firstModel));
    const resumedModel = randomQwen2Model(config, 8, cpu);
    const resumed = await train(resumedModel, trainSet, full, { outDir, resume: outDir, ...quiet }, writer(resumedModel));
    expect(resumed.metrics.map((m) => m.loss)).toEqual(straight.metrics.map((m) => m.loss));
  });

  it('full finetuning trains every weight', async () => {
    const model = randomQwen2Model(config, 6, cpu);
    const before = await meanLoss(model, heldOut);
    const written: string[] = [];
    const result = await train(model, trainSet, { ...settings, mode: 'full', lr: 3e-3, maxSteps: 12, saveEvery: 100 }, { outDir: path.join(dir, 'full-ft'), ...quiet }, async (d) => {
      written.push(d);
    });
    expect(result.steps).toBe(12);
    expect(model.adapters).toBeNull();
    expect(await meanLoss(model, heldOut)).toBeLessThan(before);
    expect(written.length).toBeGreaterThan(0);
  });
});
