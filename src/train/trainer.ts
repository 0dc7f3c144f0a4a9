// The training loop: rank-1 adapters on a frozen base (the paper's setting), or every weight (--full, the
// Table 1 baseline). One optimizer step = one global batch, accumulated over micro-batches (shared out over
// several devices with io.replicas: data-parallel.ts); loss = mean cross-entropy over the scored (assistant)
// tokens of the whole global batch.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Backend, BackendName } from '../kernels/backend.ts';
import { Tensor, keep, tidy } from '../tensor/tensor.ts';
import { add, cast, crossEntropyRows, detach, div, sum, tensor } from '../tensor/ops.ts';
import { linearCrossEntropy } from '../tensor/linear-cross-entropy.ts';
import { hookName } from '../model/hooks.ts';
import { backward, noGrad, requireGrad, zeroGrad } from '../tensor/autograd.ts';
import { Random } from '../tensor/random.ts';
import { LoraAdapters, PAPER_LORA, projectionDims } from '../model/lora.ts';
import { modelTensors, readPeftAdapter, savePeftAdapter } from '../model/load.ts';
import { openCheckpoint } from '../model/checkpoint.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import { AdamW } from './adamw.ts';
import { clipGradNorm } from './clip.ts';
import { DataParallel, checkDeviceCount } from './data-parallel.ts';
import { cosineWithWarmup, warmupSteps } from './schedule.ts';
import { lossCurveSvg } from './plot.ts';
import { makeBatch, type Batch } from './data-batch.ts';
import { DataOrder, type DataOrderState } from './data-order.ts';
import type { TokenizedExample } from './data-rows.ts';
import {
  assignParameters, readOptimizer, readTrainerState, resolveCheckpoint, saveCheckpoint, type TrainerState,
} from './train-state.ts';
import { writeJsonAtomic } from '../io/atomic.ts';
import { appendJsonl } from '../io/jsonl.ts';

export interface TrainSettings {
  /** 'adapter': rank-1 LoRA on all 7 projections of every layer; 'full': every base weight. */
  mode: 'adapter' | 'full';
  epochs: number;
  /** Stop after this many optimizer steps instead of running every epoch. */
  maxSteps?: number;
  /** Examples per optimizer step (global batch, by gradient accumulation). */
  batchSize: number;
  /** Examples per forward/backward pass. */
  microBatch: number;
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  warmupRatio: number;
  maxGradNorm: number;
  seed: number;
  loraAlpha: number;
  gradientCheckpointing: boolean;
  saveEvery: number;
  /** Checkpoints to keep (0 = all). */
  keepCheckpoints: number;
  padId: number;
  /**
   * Rows (tokens) per chunk of the loss, which runs from the final hidden states without [T, V] logits
   * (default: defaultLossChunkRows(V), one chunk's logits ≤ 64 MiB).
   */
  lossChunk?: number;
  /**
   * The dtype checkpointed layer inputs are kept in (default 'bf16': half the bytes, the toy world's loss curve
   * unchanged within noise, bench/results/2026-12-06-toy-checkpoint-dtype.json; 'f32' recomputes exactly).
   */
  checkpointDtype?: 'f32' | 'bf16';
  /**
   * Tokens per chunk of a checkpointed layer's MLP sub-block in its forward and recompute + backward
   * (Qwen2Model.layerTokenChunk; default DEFAULT_LAYER_TOKEN_CHUNK, 0: whole layers). Blocks up to the chunk run
   * whole; longer ones give the same loss and gradients within float rounding, without [T, I] intermediates.
   */
  layerTokenChunk?: number;
  /**
   * Keep the gradient checkpoints in host memory between each micro-batch's forward and backward
   * (Qwen2Model.offloadCheckpoints): the device holds the weights and one layer. WebGPU, one device, with
   * gradient checkpointing.
   */
  offloadCheckpoints?: boolean;
}

/** The trainer's token chunk for layers' MLP sub-blocks: [1024, I] intermediates, still large matmuls. */
export const DEFAULT_LAYER_TOKEN_CHUNK = 1024;

/** The paper's optimisation settings (s1.1 / rank-1 LoRA code). */
export const PAPER_TRAINING: TrainSettings = {
  mode: 'adapter', epochs: 5, batchSize: 16, microBatch: 1, lr: 1e-3, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 1e-4,
  warmupRatio: 0.05, maxGradNorm: 1.0, seed: 42, loraAlpha: 16, gradientCheckpointing: true, saveEvery: 50,
  keepCheckpoints: 2, padId: 0,
};

export interface StepMetrics {
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  gradNorm: number;
  scoredTokens: number;
  tokens: number;
  tokensPerSecond: number;
  seconds: number;
}

export interface TrainIO {
  outDir: string;
  /** Continue from this checkpoint folder (or the latest checkpoint inside this output folder). */
  resume?: string;
  log: (line: string) => void;
  /** Called after every optimizer step (progress bars). */
  onStep?: (metrics: StepMetrics, totalSteps: number) => void;
  /** Polled between steps: true asks the loop to save and stop (Ctrl-C). */
  shouldStop?: () => boolean;
  /**
   * Copies of the model on other devices (--devices N: the same weights, each model on its own backend): every
   * step's micro-batches are shared out among the model and these, and their gradients summed before AdamW.
   */
  replicas?: readonly Qwen2Model[];
}

export type TrainOutcome = 'completed' | 'interrupted';

export interface TrainResult {
  outcome: TrainOutcome;
  steps: number;
  metrics: StepMetrics[];
}

export const METRICS_FILE = 'metrics.jsonl';
export const LOSS_CURVE_FILE = 'loss-curve.svg';

/**
 * Summed cross-entropy over a micro-batch's scored targets (differentiable; divide by the count you average
 * over), from the final hidden states in chunks of `lossChunk` rows: no [B, T, V] logits. A hook on the logits
 * needs them, and then gets them.
 */
export function batchLossSum(model: Qwen2Model, batch: Batch, lossChunk?: number): Tensor {
  const backend = model.backend;
  const shape = [batch.batch, batch.seqLen];
  return tidy(() => {
    const ids = tensor(batch.ids, shape, { backend, dtype: 'i32' });
    const targets = tensor(batch.targets, shape, { backend, dtype: 'i32' });
    const mask = tensor(batch.mask, shape, { backend });
    if (model.hooks.has(hookName.logits())) return sum(crossEntropyRows(model.forward(ids), targets, mask));
    const hidden = model.forward(ids, { hiddenOnly: true }); // [B, T, H]
    return linearCrossEntropy(hidden, model.lmHeadWeight, targets, { mask, reduction: 'sum', ...(lossChunk ? { chunkRows: lossChunk } : {}) });
  });
}

/** Mean cross-entropy per scored token of a batch, without a graph (held-out evaluation). */
export async function meanBatchLoss(model: Qwen2Model, batch: Batch, lossChunk?: number): Promise<number> {
  const loss = noGrad(() => tidy(() => div(batchLossSum(model, batch, lossChunk), Math.max(batch.tokens, 1))));
  try {
    return await loss.item();
  } finally {
    loss.dispose();
  }
}

export function totalStepsFor(examples: number, settings: Pick<TrainSettings, 'epochs' | 'batchSize' | 'maxSteps'>): number {
  const full = Math.ceil((settings.epochs * examples) / settings.batchSize);
  return settings.maxSteps !== undefined ? Math.min(settings.maxSteps, full) : full;
}

/**
 * Runs forward + backward over `batches` on one model, the gradients accumulating in its parameters; returns
 * the step's loss (the micro-batch losses added in order) on the device, unread. Between each forward and its
 * backward, the checkpoints offloaded to the host (if any) are waited for.
 */
async function accumulate(model: Qwen2Model, batches: readonly Batch[], microLoss: (model: Qwen2Model, batch: Batch) => Tensor): Promise<Tensor> {
  const microLosses: Tensor[] = [];
  let stepLoss: Tensor | null = null;
  try {
    for (const batch of batches) {
      const loss = microLoss(model, batch);
      if (model.offloadCheckpoints) await model.settleOffloadedCheckpoints();
      backward(loss);
      microLosses.push(keep(detach(loss)));
      loss.dispose();
    }
    stepLoss = noGrad(() => tidy(() => microLosses.reduce((a, b) => add(a, b))));
    return stepLoss;
  } finally {
    for (const t of microLosses) if (t !== stepLoss) t.dispose();
  }
}

/** Refuses --offload-checkpoints where it cannot work: the CPU backend, no checkpointing. */
export function checkOffloadCheckpoints(settings: Pick<TrainSettings, 'offloadCheckpoints' | 'gradientCheckpointing'>, backend: BackendName): void {
  if (!settings.offloadCheckpoints) return;
  if (backend !== 'webgpu') {
    throw new Error(`--offload-checkpoints needs the WebGPU backend: on the ${backend} backend the checkpoints are in host memory already`);
  }
  if (!settings.gradientCheckpointing) throw new Error('--offload-checkpoints offloads gradient checkpoints: it cannot go with --no-gradient-checkpointing');
}

/** Trainable parameters for the mode; the base weights are made f32 and trainable only for --full. */
function prepareParameters(model: Qwen2Model, settings: TrainSettings, backend: Backend): Tensor[] {
  if (settings.mode === 'adapter') {
    if (!model.adapters) {
      const { dims } = model;
      model.adapters = LoraAdapters.initialize(
        dims.layers, projectionDims(dims.hidden, dims.intermediate, dims.heads, dims.kvHeads, dims.headDim),
        new Random(settings.seed), backend, { ...PAPER_LORA, loraAlpha: settings.loraAlpha },
      );
    }
    return model.adapters.parameters();
  }
  // Full finetune: every weight becomes an f32 leaf (a bf16 checkpoint is widened once, here).
  const params: Tensor[] = [];
  const trainable = (t: Tensor): Tensor => {
    const f32 = t.dtype === 'f32' && t.isContiguous && t.offset === 0 ? t : keep(noGrad(() => cast(t, 'f32')));
    if (f32 !== t) t.dispose();
    requireGrad(f32);
    params.push(f32);
    return f32;
  };
  const w = model.weights;
  w.embedTokens = trainable(w.embedTokens);
  w.norm = trainable(w.norm);
  if (w.lmHead) w.lmHead = trainable(w.lmHead);
  for (const layer of w.layers) {
    layer.inputLayernorm = trainable(layer.inputLayernorm);
    layer.postAttentionLayernorm = trainable(layer.postAttentionLayernorm);
    for (const lin of [layer.qProj, layer.kProj, layer.vProj, layer.oProj, layer.gateProj, layer.upProj, layer.downProj]) {
      lin.weight = trainable(lin.weight);
      if (lin.bias) lin.bias = trainable(lin.bias);
    }
  }
  model.trainsBase = true;
  return params;
}

async function writeTrainedWeights(model: Qwen2Model, settings: TrainSettings, dir: string, writeFullModel?: (dir: string) => Promise<void>): Promise<void> {
  if (settings.mode === 'adapter') await savePeftAdapter(dir, model.adapters!);
  else if (writeFullModel) await writeFullModel(dir);
  else throw new Error('train: full finetuning needs a writer for the model folder');
}

function settingsRecord(settings: TrainSettings, examples: number): Record<string, unknown> {
  return { ...settings, examples };
}

/**
 * Trains `model` on `examples`. Writes into io.outDir: metrics.jsonl (one line per step), checkpoint-<step>
 * folders every saveEvery steps, the final weights at the top level (a PEFT adapter folder in adapter mode),
 * and loss-curve.svg. Stops with an error naming the step on a non-finite loss, keeping the last good
 * checkpoint.
 */
export async function train(
  model: Qwen2Model,
  examples: readonly TokenizedExample[],
  settings: TrainSettings,
  io: TrainIO,
  writeFullModel?: (dir: string) => Promise<void>,
): Promise<TrainResult> {
  if (examples.length === 0) throw new Error('train: no training examples');
  if (settings.batchSize % settings.microBatch !== 0) {
    throw new Error(`train: batch size ${settings.batchSize} is not a multiple of the micro-batch ${settings.microBatch}`);
  }
  const replicas = io.replicas ?? [];
  checkDeviceCount(1 + replicas.length, settings);
  const backend = model.backend;
  checkOffloadCheckpoints(settings, backend.name);
  await fs.mkdir(io.outDir, { recursive: true });
  const totalSteps = totalStepsFor(examples.length, settings);
  for (const m of [model, ...replicas]) {
    m.gradientCheckpointing = settings.gradientCheckpointing;
    m.checkpointDtype = settings.checkpointDtype ?? 'bf16';
    m.layerTokenChunk = settings.layerTokenChunk ?? DEFAULT_LAYER_TOKEN_CHUNK;
    m.offloadCheckpoints = settings.offloadCheckpoints ?? false;
  }
  const params = prepareParameters(model, settings, backend);
  const optimizer = new AdamW(params, { lr: settings.lr, betas: settings.betas, eps: settings.eps, weightDecay: settings.weightDecay });
  let order = new DataOrder(examples.length, settings.seed);
  let step = 0;
  let secondsBefore = 0;
  let tokensSeen = 0;
  const metricsFile = path.join(io.outDir, METRICS_FILE);
  let metrics: StepMetrics[] = [];

  if (io.resume) {
    const checkpointDir = await resolveCheckpoint(io.resume);
    const state = await readTrainerState(checkpointDir);
    const expected = settingsRecord(settings, examples.length);
    for (const key of ['mode', 'batchSize', 'microBatch', 'lr', 'seed', 'examples', 'loraAlpha'] as const) {
      if (JSON.stringify(state.settings[key]) !== JSON.stringify(expected[key])) {
        throw new Error(`--resume ${checkpointDir}: ${key} was ${JSON.stringify(state.settings[key])}, now ${JSON.stringify(expected[key])}; a resumed run must use the same settings`);
      }
    }
    if (settings.mode === 'adapter') {
      // Copy into the parameters the optimizer already holds.
      const loaded = await readPeftAdapter(checkpointDir, model);
      assignParameters(params, loaded.parameters());
      loaded.dispose();
    } else {
      // The checkpoint holds a full model folder: copy each weight into the parameter of the same name.
      const loaded = await (await openCheckpoint(checkpointDir)).loadAll(backend);
      try {
        for (const [name, param] of modelTensors(model)) {
          const source = loaded.get(name);
          if (!source) throw new Error(`--resume ${checkpointDir}: the checkpoint has no ${name}`);
          assignParameters([param], [source]);
        }
      } finally {
        for (const t of loaded.values()) t.dispose();
      }
    }
    await readOptimizer(path.join(checkpointDir, 'optimizer.safetensors'), optimizer);
    order = DataOrder.fromState(state.dataOrder as DataOrderState);
    step = state.step;
    secondsBefore = state.seconds;
    tokensSeen = state.tokensSeen;
    // Keep the metrics of the steps the checkpoint covers; later lines belong to the interrupted tail.
    const text = await fs.readFile(metricsFile, 'utf8').catch(() => '');
    metrics = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as StepMetrics).filter((m) => m.step <= step);
    await fs.writeFile(metricsFile, metrics.map((m) => `${JSON.stringify(m)}\n`).join(''));
    io.log(`resumed from ${checkpointDir} at step ${step}/${totalSteps}`);
  } else {
    await fs.writeFile(metricsFile, '');
  }
  // Every replica starts from the primary's (initialised or resumed) adapters.
  const parallel = replicas.length > 0
    ? new DataParallel([{ model, params }, ...replicas.map((m) => ({ model: m, params: prepareParameters(m, settings, m.backend) }))])
    : null;
  await parallel?.broadcast();

  const save = async (): Promise<void> => {
    const state: TrainerState = {
      version: 1, step, totalSteps, dataOrder: order.state(), settings: settingsRecord(settings, examples.length),
      seconds: secondsBefore, tokensSeen,
    };
    await saveCheckpoint({
      outDir: io.outDir, state, optimizer, keep: settings.keepCheckpoints,
      writeWeights: (dir) => writeTrainedWeights(model, settings, dir, writeFullModel),
    });
    await writeTrainedWeights(model, settings, io.outDir, writeFullModel);
  };

  io.log(`training ${params.reduce((n, p) => n + p.size, 0).toLocaleString('en-US')} parameters (${settings.mode}) for ${totalSteps} steps, ` +
    `${warmupSteps(totalSteps, settings.warmupRatio)} warmup, global batch ${settings.batchSize} (micro-batch ${settings.microBatch})`);
  const microSteps = settings.batchSize / settings.microBatch;
  let outcome: TrainOutcome = 'completed';
  while (step < totalSteps) {
    if (io.shouldStop?.()) {
      outcome = 'interrupted';
      break;
    }
    const started = performance.now();
    const lr = cosineWithWarmup(step, totalSteps, settings.warmupRatio, settings.lr);
    const epoch = order.epoch;
    // Micro-batches are right-padded to their longest row, so rows of like length go together: less compute
    // spent on padding, and the step's loss and gradient are the same sums taken in another order.
    const chosen = Array.from({ length: settings.batchSize }, () => examples[order.next()]!)
      .sort((a, b) => a.inputIds.length - b.inputIds.length);
    const batches = Array.from({ length: microSteps }, (_, i) => makeBatch(chosen.slice(i * settings.microBatch, (i + 1) * settings.microBatch), settings.padId));
    const scored = batches.reduce((n, b) => n + b.tokens, 0);
    const tokens = batches.reduce((n, b) => n + b.ids.length, 0);
    const microLoss = (m: Qwen2Model, batch: Batch) => tidy(() => div(batchLossSum(m, batch, settings.lossChunk), Math.max(scored, 1)));
    const stepLoss = parallel ? await parallel.accumulate(batches, microLoss) : await accumulate(model, batches, microLoss);
    const norm = clipGradNorm(params, settings.maxGradNorm);
    const loss = typeof stepLoss === 'number' ? stepLoss : await stepLoss.item();
    const gradNorm = norm ? await norm.item() : 0;
    if (typeof stepLoss !== 'number') stepLoss.dispose();
    norm?.dispose();
    if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
      zeroGrad(params);
      const last = step > 0 ? ` The last good checkpoint (if any) is in ${io.outDir}.` : '';
      throw new Error(`train: the loss became ${loss} (gradient norm ${gradNorm}) at step ${step + 1}; stopping without updating.${last}`);
    }
    optimizer.step(lr);
    zeroGrad(params);
    await parallel?.broadcast();
    step++;
    const seconds = (performance.now() - started) / 1000;
    secondsBefore += seconds;
    tokensSeen += tokens;
    const entry: StepMetrics = { step, epoch, loss, lr, gradNorm, scoredTokens: scored, tokens, tokensPerSecond: tokens / seconds, seconds: secondsBefore };
    metrics.push(entry);
    await appendJsonl(metricsFile, entry);
    io.onStep?.(entry, totalSteps);
    if (step % settings.saveEvery === 0 || step === totalSteps) await save();
  }
  if (outcome === 'interrupted') {
    await save();
    io.log(`interrupted: saved step ${step} to ${io.outDir}; continue with --resume ${io.outDir}`);
  }
  if (metrics.length > 0) {
    await fs.writeFile(path.join(io.outDir, LOSS_CURVE_FILE), await lossCurveSvg(metrics.map((m) => ({ step: m.step, loss: m.loss })), `rank1 ${settings.mode} training loss`));
  }
  await writeJsonAtomic(path.join(io.outDir, 'training_args.json'), settingsRecord(settings, examples.length));
  optimizer.dispose();
  return { outcome, steps: step, metrics };
}
