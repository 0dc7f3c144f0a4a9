// Gradient checkpoints kept in bf16 (--checkpoint-dtype bf16): the forward is untouched (same outputs, same
// loss), the backward is exactly the f32 backward taken at the input rounded to bf16, the kept layer inputs take
// half the bytes, and a short training run stays within a rounding's distance of the f32 one.
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { backward, noGrad, requireGrad } from '../src/tensor/autograd.ts';
import { checkpoint } from '../src/tensor/checkpoint.ts';
import { tidy, type Tensor } from '../src/tensor/tensor.ts';
import { cast, mul, silu, sum, tensor } from '../src/tensor/ops.ts';
import { randomQwen2Model, randomRankOneAdapters, tinyQwen2Config } from '../src/model/random-model.ts';
import { makeBatch } from '../src/train/data-batch.ts';
import { syntheticRows } from '../src/train/data-synthetic.ts';
import { tokenizeRows } from '../src/train/data.ts';
import { PAPER_TRAINING, batchLossSum, train, type TrainSettings } from '../src/train/trainer.ts';
import { randomFloats } from './webgpu-helpers.ts';

const cpu = getCpuBackend();
let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-checkpoint-dtype-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('bf16 gradient checkpoints', () => {
  it('forward unchanged; backward equals the f32 backward at the bf16-rounded input', async () => {
    const w = requireGrad(tensor(randomFloats(24, 1), [24], { backend: cpu }));
    const values = randomFloats(5 * 24, 2, 3);
    const block = (x: Tensor) => mul(silu(mul(x, w)), x);
    const run = async (savedDtype: 'f32' | 'bf16' | 'reference') => {
      const x = requireGrad(tensor(values, [5, 24], { backend: cpu }));
      // The reference starts from the rounded input, without checkpointing.
      const start = savedDtype === 'reference' ? requireGrad(noGrad(() => cast(cast(x, 'bf16'), 'f32'))) : x;
      const y = savedDtype === 'reference' ? block(start) : checkpoint((input) => block(input), x, [], true, savedDtype);
      const out = await y.toFloat32Array();
      backward(tidy(() => sum(y)));
      const grads = { x: await start.grad!.toFloat32Array(), w: await w.grad!.toFloat32Array() };
      for (const t of [x, start, y, start.grad, w.grad]) t?.dispose();
      w.grad = null;
      return { out, grads };
    };
    const f32 = await run('f32');
    const bf16 = await run('bf16');
    const reference = await run('reference');
    expect(bf16.out).toEqual(f32.out);
    expect(bf16.grads.w).toEqual(reference.grads.w);
    expect(bf16.grads.x).toEqual(reference.grads.x);
    expect(bf16.grads.w).not.toEqual(f32.grads.w); // the rounding does reach the gradient
    w.dispose();
  });

  it('keeps each layer input in half the bytes until backward, and the loss is the same', async () => {
    const config = tinyQwen2Config({ vocabSize: 48, numHiddenLayers: 3 });
    const examples = tokenizeRows(syntheticRows(2, 5, { vocabSize: 48, minLength: 30, maxLength: 30 }), null);
    const batch = makeBatch(examples, 0);
    const held = async (dtype: 'f32' | 'bf16') => {
      const model = randomQwen2Model(config, 4, cpu);
      model.adapters = randomRankOneAdapters(model.dims, 5, cpu);
      model.gradientCheckpointing = true;
      model.checkpointDtype = dtype;
      const before = cpu.memory().liveBytes;
      const loss = batchLossSum(model, batch);
      const kept = cpu.memory().liveBytes - before;
      const value = await loss.item();
      backward(loss);
      loss.dispose();
      model.dispose();
      return { kept, value };
    };
    const f32 = await held('f32');
    const bf16 = await held('bf16');
    expect(bf16.value).toBe(f32.value);
    const layerInputs = config.numHiddenLayers * batch.batch * batch.seqLen * config.hiddenSize;
    expect(f32.kept - bf16.kept).toBe(2 * layerInputs);
  });

  it('trains within rounding of the f32 run on a short toy run', async () => {
    const examples = tokenizeRows(syntheticRows(16, 1, { vocabSize: 32, minLength: 10, maxLength: 14 }), null);
    const settings: TrainSettings = {
      ...PAPER_TRAINING, epochs: 1, maxSteps: 4, batchSize: 4, microBatch: 2, lr: 2e-2, saveEvery: 100, keepCheckpoints: 0,
      seed: 7, gradientCheckpointing: true,
    };
    const losses = async (checkpointDtype: 'f32' | 'bf16') => {
      const model = randomQwen2Model(tinyQwen2Config({ vocabSize: 32 }), 3, cpu);
      const result = await train(model, examples, { ...settings, checkpointDtype }, { outDir: path.join(dir, checkpointDtype), log: () => {} });
      model.dispose();
      return result.metrics.map((m) => m.loss);
    };
    const f32 = await losses('f32');
    const bf16 = await losses('bf16');
    expect(bf16[0]).toBe(f32[0]);
    bf16.forEach((loss, i) => expect(Math.abs(loss - f32[i]!) / f32[i]!).toBeLessThan(1e-3));
  });
});
