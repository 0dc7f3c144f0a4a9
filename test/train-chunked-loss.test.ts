// The trainer's loss runs from the final hidden states in row chunks (no [B, T, V] logits): the same loss and
// adapter gradients as through the logits, and the same training run step for step (adapter and --full).
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { backward, noGrad } from '../src/tensor/autograd.ts';
import { tidy } from '../src/tensor/tensor.ts';
import { crossEntropyRows, sum, tensor } from '../src/tensor/ops.ts';
import { hookName } from '../src/model/hooks.ts';
import { withHooks } from '../src/model/hook-registry.ts';
import { randomQwen2Model, randomRankOneAdapters, tinyQwen2Config } from '../src/model/random-model.ts';
import { makeBatch } from '../src/train/data-batch.ts';
import { syntheticRows } from '../src/train/data-synthetic.ts';
import { tokenizeRows } from '../src/train/data.ts';
import { PAPER_TRAINING, batchLossSum, train, type TrainSettings } from '../src/train/trainer.ts';
import { expectClose } from './webgpu-helpers.ts';

const cpu = getCpuBackend();
const examples = tokenizeRows(syntheticRows(12, 5, { vocabSize: 48, minLength: 7, maxLength: 13 }), null);
let dir: string;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-chunked-loss-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('the chunked training loss', () => {
  for (const tied of [false, true]) {
    it(`equals the loss through the logits, adapter gradients included (${tied ? 'tied' : 'untied'} head)`, async () => {
      const model = randomQwen2Model(tinyQwen2Config({ vocabSize: 48, tieWordEmbeddings: tied }), 11, cpu);
      model.adapters = randomRankOneAdapters(model.dims, 12, cpu);
      const batch = makeBatch(examples.slice(0, 3), 0);
      const shape = [batch.batch, batch.seqLen];
      const run = async (loss: () => ReturnType<typeof batchLossSum>) => {
        const value = loss();
        backward(value);
        const params = model.adapters!.parameters();
        const grads = await Promise.all(params.map((p) => p.grad!.toFloat32Array()));
        const out = { loss: await value.item(), grads };
        value.dispose();
        for (const p of params) { p.grad?.dispose(); p.grad = null; }
        return out;
      };
      const chunked = await run(() => batchLossSum(model, batch, 5));
      const unchunked = await run(() => tidy(() => {
        const ids = tensor(batch.ids, shape, { backend: cpu, dtype: 'i32' });
        const targets = tensor(batch.targets, shape, { backend: cpu, dtype: 'i32' });
        const mask = tensor(batch.mask, shape, { backend: cpu });
        return sum(crossEntropyRows(model.forward(ids), targets, mask));
      }));
      expectClose([chunked.loss], [unchunked.loss], { rtol: 1e-5 }, 'loss');
      chunked.grads.forEach((g, i) => expectClose(g, unchunked.grads[i]!, { rtol: 1e-4, scaledAtol: 1e-5 }, `adapter grad ${i}`));
      // Evaluation (noGrad) gives the same number.
      const evaluated = await noGrad(() => batchLossSum(model, batch, 2)).item();
      expectClose([evaluated], [unchunked.loss], { rtol: 1e-5 }, 'noGrad loss');
      model.dispose();
    });
  }

  for (const mode of ['adapter', 'full'] as const) {
    it(`trains the same run as the logits path, step for step (${mode})`, async () => {
      const settings: TrainSettings = {
        ...PAPER_TRAINING, mode, epochs: 1, maxSteps: 3, batchSize: 4, microBatch: 2, lr: 2e-2, saveEvery: 100,
        keepCheckpoints: 0, seed: 3, gradientCheckpointing: true,
      };
      const config = tinyQwen2Config({ vocabSize: 48, tieWordEmbeddings: mode === 'full' });
      const writeModel = async () => {};
      const chunkedModel = randomQwen2Model(config, 21, cpu);
      const chunked = await train(chunkedModel, examples, { ...settings, lossChunk: 3 }, { outDir: path.join(dir, `${mode}-chunked`), log: () => {} }, writeModel);
      // A hook on the logits makes the trainer build them: the unchunked path.
      const logitsModel = randomQwen2Model(config, 21, cpu);
      const unchunked = await withHooks(logitsModel, [[hookName.logits(), (value) => value]], () =>
        train(logitsModel, examples, settings, { outDir: path.join(dir, `${mode}-logits`), log: () => {} }, writeModel));
      expect(chunked.metrics.length).toBe(3);
      expectClose(chunked.metrics.map((m) => m.loss), unchunked.metrics.map((m) => m.loss), { rtol: 1e-5 }, 'losses');
      expectClose(chunked.metrics.map((m) => m.gradNorm), unchunked.metrics.map((m) => m.gradNorm), { rtol: 1e-4 }, 'gradient norms');
      chunkedModel.dispose();
      logitsModel.dispose();
    });
  }
});
