// Offloaded gradient checkpoints (Qwen2Model.offloadCheckpoints, `rank1 train --offload-checkpoints`): each
// layer's kept input goes to host memory between the forward and the backward. A training step with offload
// gives the loss and adapter gradients of one without (the bytes uploaded for the recompute are the bytes that
// were kept, so exactly), with bf16 and f32 checkpoints and with token-chunked layers; on WebGPU the device's
// peak of live bytes drops by the checkpoints; readRaw's copy is taken when it is called (what offloading rests
// on); train() and `rank1 train --offload-checkpoints` give the loss curve and adapters of a run without it; a
// backward before the settle throws; the command line refuses the flag on the CPU backend. The model-level
// checks also run on the CPU backend (where offloading works but gains nothing); the WebGPU ones skip without an
// adapter (test/webgpu-helpers.ts).
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import type { Backend } from '../src/kernels/backend.ts';
import { createCpuBackend } from '../src/kernels/cpu/index.ts';
import { backward, noGrad } from '../src/tensor/autograd.ts';
import { CheckpointOffload } from '../src/tensor/checkpoint.ts';
import { div, tidy } from '../src/tensor/index.ts';
import { cast, tensor } from '../src/tensor/ops.ts';
import { randomQwen2Model, randomRankOneAdapters, tinyQwen2Config } from '../src/model/random-model.ts';
import { readSafetensorsHeader, readTensorData } from '../src/model/safetensors.ts';
import { makeBatch, type Batch } from '../src/train/data-batch.ts';
import { syntheticRows, tokensRowRecord } from '../src/train/data-synthetic.ts';
import { tokenizeRows } from '../src/train/data.ts';
import { PAPER_TRAINING, batchLossSum, checkOffloadCheckpoints, train, type TrainSettings } from '../src/train/trainer.ts';
import { TRAIN_DEFAULTS, trainCommand, type TrainCommandOptions } from '../src/cli/train-command.ts';
import { probeForTests, randomFloats, registerRequiredFailure } from './webgpu-helpers.ts';
import { disposeAdaptedModel } from './helpers/adapted-model.ts';

const probe = await probeForTests('offload-checkpoints');
registerRequiredFailure(probe.reason);
const segmented = probe.backend ? await probeForTests('offload-checkpoints (segmented)', { maxBufferBytes: 1024 }) : null;

const cpu = createCpuBackend();
const LAYERS = 4;
const config = tinyQwen2Config({ hiddenSize: 32, intermediateSize: 64, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: 64, numHiddenLayers: LAYERS });

function batchOf(rows: number, tokens: number): Batch {
  return makeBatch(Array.from({ length: rows }, (_, r) => ({
    inputIds: Int32Array.from({ length: tokens }, (_, i) => (i * 7919 + r * 104729 + 13) % config.vocabSize),
    lossMask: new Uint8Array(tokens).fill(1),
  })), 0);
}

interface StepOptions {
  offload: boolean;
  dtype: 'f32' | 'bf16';
  chunk: number | null;
}

/**
 * Loss, adapter gradients, the step's peak of live device bytes and the live bytes between the forward and the
 * backward (both less what was live before).
 */
async function step(backend: Backend, batch: Batch, options: StepOptions) {
  const model = randomQwen2Model(config, 5, backend);
  model.adapters = randomRankOneAdapters(model.dims, 6, backend, 0.2);
  model.gradientCheckpointing = true;
  model.checkpointDtype = options.dtype;
  model.layerTokenChunk = options.chunk;
  model.offloadCheckpoints = options.offload;
  const before = backend.memory().liveBytes;
  backend.resetPeak();
  const loss = tidy(() => div(batchLossSum(model, batch, 8), batch.tokens));
  await model.settleOffloadedCheckpoints();
  const betweenPasses = backend.memory().liveBytes - before;
  backward(loss);
  const peak = backend.memory().peakBytes - before;
  const value = await loss.item();
  loss.dispose();
  const grads = await Promise.all(model.adapters.parameters().map((p) => p.grad!.toFloat32Array()));
  disposeAdaptedModel(model);
  return { loss: value, grads, peak, betweenPasses };
}

const settingsGrid: StepOptions[] = (['bf16', 'f32'] as const).flatMap((dtype) => [null, 4].map((chunk) => ({ offload: true, dtype, chunk })));

function describeEquality(name: string, backend: () => Backend) {
  describe(`offloaded checkpoints on ${name}`, () => {
    for (const options of settingsGrid) {
      it(`give the loss and adapter gradients of kept ones (${options.dtype} checkpoints, layer chunk ${options.chunk ?? 'off'})`, async () => {
        const batch = batchOf(2, 13);
        const kept = await step(backend(), batch, { ...options, offload: false });
        const offloaded = await step(backend(), batch, options);
        expect(offloaded.loss).toBe(kept.loss);
        expect(offloaded.grads.length).toBe(LAYERS * 7 * 2);
        offloaded.grads.forEach((g, i) => expect(g, `adapter grad ${i}`).toEqual(kept.grads[i]));
      });
    }

    it('refuse a backward that was not preceded by the settle, naming it', async () => {
      const b = backend();
      const model = randomQwen2Model(config, 5, b);
      model.adapters = randomRankOneAdapters(model.dims, 6, b, 0.2);
      model.gradientCheckpointing = true;
      model.offloadCheckpoints = true;
      const batch = batchOf(1, 9);
      const loss = tidy(() => div(batchLossSum(model, batch, 8), batch.tokens));
      expect(() => backward(loss)).toThrow(/offloaded checkpoint \[1, 9, 32\] has not reached host memory: .*settleOffloadedCheckpoints\(\)/);
      loss.dispose();
      await model.settleOffloadedCheckpoints(); // the forward's downloads land; nothing is left pending
      model.adapters.dispose();
      model.dispose();
    });
  });
}

describeEquality('the CPU backend', () => cpu);
describe.skipIf(!probe.backend)('on WebGPU', () => {
  describeEquality('WebGPU', () => probe.backend!);

  it('leave the L checkpoints off the device between the passes, and the step peak lower by (L - 1) of them or more', async () => {
    const gpu = probe.backend!;
    const tokens = 256;
    for (const dtype of ['bf16', 'f32'] as const) {
      const batch = batchOf(1, tokens);
      const kept = await step(gpu, batch, { offload: false, dtype, chunk: 16 });
      const offloaded = await step(gpu, batch, { offload: true, dtype, chunk: 16 });
      const checkpointBytes = tokens * config.hiddenSize * (dtype === 'bf16' ? 2 : 4); // one layer input [1, T, H]
      expect(kept.betweenPasses - offloaded.betweenPasses, `${dtype}: live between the passes`).toBe(LAYERS * checkpointBytes);
      // The kept run peaks in the last layer's backward, with every checkpoint live; offloaded, the recomputed
      // layer's uploaded input is live instead (an f32 copy either way), and the peak may fall in another layer's
      // backward, whose working set differs from the last one's by less than half a layer input at this shape.
      const drop = kept.peak - offloaded.peak;
      const message = `${dtype}: peak ${kept.peak} kept, ${offloaded.peak} offloaded`;
      expect(drop, message).toBeGreaterThanOrEqual((LAYERS - 1.5) * checkpointBytes);
      expect(drop, message).toBeLessThanOrEqual(LAYERS * checkpointBytes);
    }
  });

  it('train the same loss curve and adapters through train(), which settles between each micro-batch\'s forward and backward', async () => {
    const gpu = probe.backend!;
    const examples = tokenizeRows(syntheticRows(8, 1, { vocabSize: config.vocabSize, minLength: 6, maxLength: 14 }), null);
    const settings: TrainSettings = {
      ...PAPER_TRAINING, epochs: 1, maxSteps: 3, batchSize: 2, microBatch: 1, lr: 2e-2, warmupRatio: 0, saveEvery: 100,
      keepCheckpoints: 0, seed: 7, gradientCheckpointing: true, layerTokenChunk: 4,
    };
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-offload-'));
    const run = async (offloadCheckpoints: boolean) => {
      const model = randomQwen2Model(config, 3, gpu);
      try {
        const result = await train(model, examples, { ...settings, offloadCheckpoints }, { outDir: path.join(dir, String(offloadCheckpoints)), log: () => {} });
        const adapters = await Promise.all(model.adapters!.parameters().map((p) => p.toFloat32Array()));
        return { losses: result.metrics.map((m) => m.loss), adapters };
      } finally {
        model.dispose();
      }
    };
    try {
      const kept = await run(false);
      const offloaded = await run(true);
      expect(offloaded.losses).toHaveLength(3);
      expect(offloaded.losses).toEqual(kept.losses);
      offloaded.adapters.forEach((values, i) => expect(values, `adapter ${i}`).toEqual(kept.adapters[i]));
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('rank1 train --offload-checkpoints --backend webgpu writes the metrics and adapter of a run without it', async () => {
    const root = path.resolve(import.meta.dirname, '..');
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-offload-cli-'));
    const data = path.join(dir, 'data.jsonl');
    await fs.writeFile(data, syntheticRows(8, 3, { vocabSize: 64 }).map((r) => JSON.stringify(tokensRowRecord(r))).join('\n'));
    const runCli = async (offload: boolean) => {
      const out = path.join(dir, offload ? 'offload' : 'kept');
      const { stderr } = await promisify(execFile)(process.execPath, [path.join(root, 'bin/rank1.js'), 'train', '--model', path.join(root, 'test/fixtures/qwen2/tiny-f32'),
        '--data', data, '--out', out, '--batch', '2', '--micro-batch', '1', '--steps', '2', '--lr', '2e-2', '--backend', 'webgpu', '--no-progress',
        ...(offload ? ['--offload-checkpoints'] : [])], { cwd: root });
      const losses = (await fs.readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => (JSON.parse(l) as { loss: number }).loss);
      const header = await readSafetensorsHeader(path.join(out, 'adapter_model.safetensors'));
      const adapter = new Map(await Promise.all([...header.tensors].map(async ([name, entry]) => [name, Array.from(await readTensorData(header.file, entry))] as const)));
      return { stderr, losses, adapter };
    };
    try {
      const kept = await runCli(false);
      const offloaded = await runCli(true);
      expect(offloaded.stderr).toMatch(/host memory for the offloaded checkpoints \d/);
      expect(kept.stderr).not.toMatch(/offloaded checkpoints/);
      expect(offloaded.losses).toHaveLength(2);
      expect(offloaded.losses).toEqual(kept.losses);
      expect(offloaded.adapter).toEqual(kept.adapter);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }, 300_000);

  it('rest on readRaw taking its copy when called: the storage freed at once and its buffer overwritten still reads back', async () => {
    for (const backend of [probe.backend!, segmented!.backend!]) {
      const numel = 1000; // 4000 bytes: 4 segments of 1024 bytes on the capped device
      const original = randomFloats(numel, 7);
      const storage = backend.upload(original, 'f32');
      const download = backend.readRaw(storage);
      backend.free(storage);
      // The freed buffer is pooled at once (the read submitted the batch); these take it and write it.
      const overwrite = backend.upload(new Float32Array(numel).fill(-1), 'f32');
      const filled = backend.full(numel, 3, 'f32');
      expect(Array.from(await download)).toEqual(Array.from(original));
      expect(Array.from(await backend.readRaw(overwrite)).every((v) => v === -1)).toBe(true);
      expect(Array.from(await backend.readRaw(filled)).every((v) => v === 3)).toBe(true);
      backend.free(overwrite);
      backend.free(filled);
    }
  });
});

describe('CheckpointOffload', () => {
  it('restores the kept bytes once, after the settle, and holds no arrived download', async () => {
    const offload = new CheckpointOffload();
    const values = randomFloats(2 * 3 * 5, 11, 3);
    const x = tensor(values, [2, 3, 5], { backend: cpu });
    const rounded = await noGrad(() => cast(cast(x, 'bf16'), 'f32')).toFloat32Array();
    const view = x.view([2, 3, 4], x.strides, 1); // a strided window: downloaded through a contiguous copy
    const expectedView = await view.toFloat32Array();
    const host = offload.download(x, 'bf16');
    const hostView = offload.download(view, 'f32');
    x.dispose();
    view.dispose();
    expect(offload.pendingCount).toBe(2);
    expect(() => offload.restore(host, 'f32')).toThrow(/checkpoint \[2, 3, 5\] has not reached host memory/);
    await offload.settle();
    expect(offload.pendingCount).toBe(0);
    const back = offload.restore(host, 'f32');
    expect(back.dtype).toBe('f32');
    expect(await back.toFloat32Array()).toEqual(rounded);
    expect(await offload.restore(hostView, 'f32').toFloat32Array()).toEqual(expectedView);
    expect(() => offload.restore(host, 'f32')).toThrow(/already used by a backward/);
    // Never settled (a forward whose graph was dropped): once the download lands, the registry lets it go.
    const dropped = tensor(values, [2, 3, 5], { backend: cpu });
    offload.download(dropped, 'bf16');
    dropped.dispose();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(offload.pendingCount).toBe(0);
  });
});

describe('--offload-checkpoints is refused where it cannot work', () => {
  it('by the trainer: the CPU backend, no gradient checkpointing', async () => {
    expect(() => checkOffloadCheckpoints({ offloadCheckpoints: true, gradientCheckpointing: true }, 'cpu')).toThrow(/--offload-checkpoints needs the WebGPU backend/);
    expect(() => checkOffloadCheckpoints({ offloadCheckpoints: true, gradientCheckpointing: false }, 'webgpu')).toThrow(/--offload-checkpoints .*--no-gradient-checkpointing/);
    expect(() => checkOffloadCheckpoints({ offloadCheckpoints: true, gradientCheckpointing: true }, 'webgpu')).not.toThrow();
    expect(() => checkOffloadCheckpoints({ offloadCheckpoints: false, gradientCheckpointing: false }, 'cpu')).not.toThrow();
    const model = randomQwen2Model(config, 3, cpu);
    const out = path.join(os.tmpdir(), 'rank1-offload-refused');
    const examples = [{ inputIds: Int32Array.from([1, 2, 3]), lossMask: new Uint8Array([0, 1, 1]) }];
    await expect(train(model, examples, { ...PAPER_TRAINING, batchSize: 1, offloadCheckpoints: true }, { outDir: out, log: () => {} }))
      .rejects.toThrow(/--offload-checkpoints needs the WebGPU backend: on the cpu backend/);
    model.dispose();
  });

  it('by the command, before loading anything', async () => {
    const options: TrainCommandOptions = {
      ...TRAIN_DEFAULTS, model: path.join(os.tmpdir(), 'no-such-model'), data: path.join(os.tmpdir(), 'no-such-data.jsonl'), out: path.join(os.tmpdir(), 'no-such-out'),
      gradientCheckpointing: true, progress: false, backend: 'cpu', offloadCheckpoints: true,
    };
    await expect(trainCommand(options)).rejects.toThrow(/--offload-checkpoints needs the WebGPU backend: on the cpu backend/);
    await expect(trainCommand({ ...options, backend: 'webgpu', gradientCheckpointing: false })).rejects.toThrow(/--no-gradient-checkpointing/);
  });

  it('by `rank1 train --offload-checkpoints --backend cpu`', async () => {
    const root = path.resolve(import.meta.dirname, '..');
    const args = [path.join(root, 'bin/rank1.js'), 'train', '--model', 'm', '--data', 'd', '--out', 'o', '--offload-checkpoints', '--backend', 'cpu'];
    const failure = await promisify(execFile)(process.execPath, args, { cwd: root }).then(() => null, (error: { stderr: string }) => error.stderr);
    expect(failure).toMatch(/--offload-checkpoints needs the WebGPU backend: on the cpu backend the checkpoints are in host memory already/);
  }, 60_000);
});
