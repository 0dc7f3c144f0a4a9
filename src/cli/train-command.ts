// `rank1 train`: rank-1 adapters (default) or a full finetune on JSONL/Parquet data, with the paper's
// defaults, a progress bar, Ctrl-C to save and stop, and --resume.
import * as os from 'node:os';
import type { BackendName } from '../kernels/backend.ts';
import { initBackend } from '../tensor/engine.ts';
import { loadChatTemplate } from '../model/chat-template.ts';
import { copyCompanionFiles, writeCheckpoint } from '../model/checkpoint.ts';
import { loadQwen2Checkpoint, modelTensors } from '../model/load.ts';
import { loadTokenizer } from '../model/tokenizer.ts';
import { projectionDims } from '../model/lora.ts';
import { DEFAULT_BLOCK_SIZE, loadTrainingRows, tokenizeRows } from '../train/data.ts';
import { DEFAULT_CHECKPOINT_DTYPE, estimateTrainingMemory, formatBytes } from '../train/memory.ts';
import { checkDeviceCount, openWebGpuBackends } from '../train/data-parallel.ts';
import { inspectMachine, planDevices, type Machine } from '../train/device-plan.ts';
import { parseGpuList } from '../kernels/webgpu/gpu-select.ts';
import { DEFAULT_LAYER_TOKEN_CHUNK, PAPER_TRAINING, checkOffloadCheckpoints, totalStepsFor, train, type TrainResult, type TrainSettings } from '../train/trainer.ts';
import type { TokenizedExample } from '../train/data-rows.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import { note, progressDisplay } from './io.ts';

export interface TrainCommandOptions {
  model: string;
  data: string;
  out: string;
  full?: boolean;
  epochs: number;
  steps?: number;
  batch: number;
  microBatch: number;
  lr: number;
  weightDecay: number;
  warmupRatio: number;
  maxGradNorm: number;
  seed: number;
  blockSize: number;
  loraAlpha: number;
  saveEvery: number;
  keepCheckpoints: number;
  resume?: string;
  gradientCheckpointing: boolean;
  /** Rows per chunk of the loss (default: defaultLossChunkRows(V)). */
  lossChunk?: number;
  /** The dtype checkpointed layer inputs are kept in (default bf16). */
  checkpointDtype?: 'f32' | 'bf16';
  /** Tokens per chunk of a layer's token-wise work in forward and recompute + backward (--layer-chunk; 0: whole layers). */
  layerChunk?: number;
  /** Keep the gradient checkpoints in host memory between forward and backward (--offload-checkpoints, WebGPU). */
  offloadCheckpoints?: boolean;
  memoryLimit?: number;
  progress: boolean;
  backend: BackendName | 'auto';
  /** WebGPU devices to train on, data-parallel (default 1): each holds the weights and runs its share of a step. */
  devices?: number;
  /** The GPUs to train on (`--gpus 0,1` or PCI addresses), one per device; the first N by PCI address when absent. */
  gpus?: string;
}

export const TRAIN_DEFAULTS = {
  epochs: PAPER_TRAINING.epochs, batch: PAPER_TRAINING.batchSize, microBatch: PAPER_TRAINING.microBatch, lr: PAPER_TRAINING.lr,
  weightDecay: PAPER_TRAINING.weightDecay, warmupRatio: PAPER_TRAINING.warmupRatio, maxGradNorm: PAPER_TRAINING.maxGradNorm,
  seed: PAPER_TRAINING.seed, blockSize: DEFAULT_BLOCK_SIZE, loraAlpha: PAPER_TRAINING.loraAlpha, saveEvery: PAPER_TRAINING.saveEvery,
  keepCheckpoints: PAPER_TRAINING.keepCheckpoints,
};


export async function trainCommand(options: TrainCommandOptions): Promise<void> {
  if (options.gpus !== undefined && options.backend === 'cpu') throw new Error(`--gpus ${options.gpus} needs --backend webgpu`);
  // The machine (sysfs, the Vulkan layer) is looked at once, and only where a GPU is chosen.
  let machine: Machine | undefined;
  const inspect = () => (machine ??= inspectMachine());
  const named = options.gpus === undefined ? undefined : parseGpuList(options.gpus, inspect().gpus);
  const devices = options.devices ?? named?.addresses.length ?? 1;
  checkDeviceCount(devices, { batchSize: options.batch, microBatch: options.microBatch, mode: options.full ? 'full' : 'adapter' });
  if (devices > 1 && options.backend === 'cpu') throw new Error(`--devices ${devices} needs --backend webgpu (the cpu backend is one device)`);
  const offloadSettings = { offloadCheckpoints: options.offloadCheckpoints ?? false, gradientCheckpointing: options.gradientCheckpointing };
  checkOffloadCheckpoints(offloadSettings, options.backend === 'cpu' ? 'cpu' : 'webgpu');
  const plan = options.backend === 'cpu' ? null : planDevices(devices, named, inspect);
  const choice = await initBackend(options.backend, plan?.gpus[0] ?? null);
  note(`backend: ${choice.reason}`);
  for (const line of plan?.notes ?? []) note(line);
  if (options.gpus !== undefined && choice.backend.name !== 'webgpu') throw new Error(`--gpus ${options.gpus} needs the WebGPU backend, and this run got ${choice.backend.name} (${choice.reason})`);
  if (devices > 1 && choice.backend.name !== 'webgpu') throw new Error(`--devices ${devices} needs the WebGPU backend, and this run got ${choice.backend.name} (${choice.reason})`);
  checkOffloadCheckpoints(offloadSettings, choice.backend.name);
  const rows = await loadTrainingRows(options.data);
  const needsTokenizer = rows.some((r) => r.kind !== 'tokens');
  const tokenizer = needsTokenizer ? await loadTokenizer(options.model) : null;
  if (needsTokenizer && !tokenizer) throw new Error(`${options.data} holds text rows, but ${options.model} has no tokenizer.json to encode them`);
  const template = await loadChatTemplate(options.model);
  const examples = tokenizeRows(rows, tokenizer, template, options.blockSize);
  const longest = examples.reduce((n, e) => Math.max(n, e.inputIds.length), 0);
  const scored = examples.reduce((n, e) => n + e.lossMask.reduce((s, v) => s + v, 0), 0);
  note(`data: ${examples.length} examples from ${options.data} (${rows[0]?.kind} rows), longest ${longest} tokens, ${scored.toLocaleString('en-US')} scored tokens`);

  const { model, config, warnings } = await loadQwen2Checkpoint(options.model, choice.backend);
  for (const warning of warnings) note(`warning: ${warning}`);
  checkTrainingMemory(model, options.full ? 'full' : 'adapter', options, longest);
  const replicas: Qwen2Model[] = [];
  for (const backend of await openWebGpuBackends(plan?.gpus.slice(1) ?? [])) replicas.push((await loadQwen2Checkpoint(options.model, backend)).model);
  if (devices > 1) note(`data-parallel over ${devices} WebGPU devices: ${options.batch / options.microBatch} micro-batches per step shared round-robin`);

  const settings: TrainSettings = {
    ...PAPER_TRAINING,
    mode: options.full ? 'full' : 'adapter',
    epochs: options.epochs,
    ...(options.steps !== undefined ? { maxSteps: options.steps } : {}),
    batchSize: options.batch,
    microBatch: options.microBatch,
    lr: options.lr,
    weightDecay: options.weightDecay,
    warmupRatio: options.warmupRatio,
    maxGradNorm: options.maxGradNorm,
    seed: options.seed,
    loraAlpha: options.loraAlpha,
    gradientCheckpointing: options.gradientCheckpointing,
    ...(options.lossChunk !== undefined ? { lossChunk: options.lossChunk } : {}),
    ...(options.checkpointDtype !== undefined ? { checkpointDtype: options.checkpointDtype } : {}),
    ...(options.layerChunk !== undefined ? { layerTokenChunk: options.layerChunk } : {}),
    ...(options.offloadCheckpoints ? { offloadCheckpoints: true } : {}),
    saveEvery: options.saveEvery,
    keepCheckpoints: options.keepCheckpoints,
    padId: tokenizer?.padTokenId ?? tokenizer?.chatTokens.endOfText ?? 0,
  };
  // A full finetune is a model folder of its own: the base's tokenizer, chat template and generation config go with it.
  const writeModel = async (dir: string) => {
    await writeCheckpoint(dir, config, modelTensors(model), { dtype: 'f32' });
    await copyCompanionFiles(options.model, dir);
  };
  await runTrainingJob(model, examples, settings, options, writeModel, options.full ? 'model' : 'PEFT adapter', replicas);
}

/**
 * Prints the memory estimate for training `model` in `mode` on examples up to `longest` tokens, and refuses
 * (throws) when it exceeds --memory-limit (CPU default: the free memory).
 */
export function checkTrainingMemory(
  model: Qwen2Model, mode: 'adapter' | 'full', options: Pick<TrainCommandOptions, 'microBatch' | 'gradientCheckpointing' | 'memoryLimit' | 'lossChunk' | 'checkpointDtype' | 'offloadCheckpoints' | 'layerChunk'>, longest: number,
): void {
  const { dims } = model;
  const full = mode === 'full';
  const adapterParameters = dims.layers * Object.values(projectionDims(dims.hidden, dims.intermediate, dims.heads, dims.kvHeads, dims.headDim))
    .reduce((n, d) => n + d.inFeatures + d.outFeatures, 0);
  const baseParameters = model.parameterCount;
  const weightBytes = [...modelTensors(model).values()].reduce((n, t) => n + t.size * (t.dtype === 'f32' ? 4 : 2), 0);
  const estimate = estimateTrainingMemory(
    dims, full ? baseParameters * 4 : weightBytes, full ? baseParameters : adapterParameters,
    options.microBatch, longest, options.gradientCheckpointing,
    {
      ...(options.lossChunk !== undefined ? { lossChunk: options.lossChunk } : {}),
      checkpointDtype: options.checkpointDtype ?? DEFAULT_CHECKPOINT_DTYPE,
      offloadCheckpoints: options.offloadCheckpoints ?? false,
      layerTokenChunk: trainedLayerChunk(options.layerChunk),
    },
  );
  const limit = options.memoryLimit ?? (model.backend.name === 'cpu' ? os.freemem() : undefined);
  note(`memory estimate: ${formatBytes(estimate.total)} (weights ${formatBytes(estimate.weights)}, parameters+gradients+AdamW ${formatBytes(estimate.optimizer)}, ` +
    `activations ${formatBytes(estimate.activations)} for micro-batch ${options.microBatch} × ${longest} tokens${options.gradientCheckpointing ? ' with' : ' without'} gradient checkpointing)` +
    (estimate.host > 0 ? `; host memory for the offloaded checkpoints ${formatBytes(estimate.host)}` : '') +
    (limit ? `; available ${formatBytes(limit)}` : ''));
  if (limit !== undefined && estimate.total > limit) {
    throw new Error(`not enough memory: training needs about ${formatBytes(estimate.total)} but ${formatBytes(limit)} is available; ` +
      `lower --block-size or --micro-batch${options.gradientCheckpointing ? '' : ', or drop --no-gradient-checkpointing'}`);
  }
}

/** The layer token chunk the trainer will use for --layer-chunk (absent: its default; 0: whole layers, null). */
function trainedLayerChunk(layerChunk: number | undefined): number | null {
  const chunk = layerChunk ?? DEFAULT_LAYER_TOKEN_CHUNK;
  return chunk > 0 ? chunk : null;
}

/** Runs `train` with a progress bar (or a line per step), Ctrl-C saving and stopping, and a closing line. */
export async function runTrainingJob(
  model: Qwen2Model,
  examples: readonly TokenizedExample[],
  settings: TrainSettings,
  options: Pick<TrainCommandOptions, 'out' | 'resume' | 'progress'>,
  writeFullModel: (dir: string) => Promise<void>,
  what: string,
  replicas: readonly Qwen2Model[] = [],
): Promise<TrainResult> {
  let stopRequested = false;
  const onSigint = () => {
    if (stopRequested) {
      note('second Ctrl-C: exiting without saving');
      process.exit(130);
    }
    stopRequested = true;
    note('\nCtrl-C: finishing this step, saving a checkpoint, then stopping (Ctrl-C again to quit at once)');
  };
  process.on('SIGINT', onSigint);
  const total = totalStepsFor(examples.length, settings);
  let result: TrainResult | undefined;
  const progress = progressDisplay({
    bar: 'step {value}/{total} |{bar}| loss {loss} | lr {lr} | {tps} tok/s | ETA {eta_formatted}',
    line: (step, totalSteps, values) => `step ${step}/${totalSteps}  loss ${values.loss}  lr ${values.lr}  grad-norm ${values.gradNorm}  ${values.tps} tok/s`,
    enabled: options.progress,
    everyMs: 0,
  });
  try {
    result = await train(model, examples, settings, {
      outDir: options.out,
      ...(options.resume ? { resume: options.resume } : {}),
      ...(replicas.length > 0 ? { replicas } : {}),
      log: note,
      shouldStop: () => stopRequested,
      onStep: (m, totalSteps) => progress.update(m.step, totalSteps, {
        loss: m.loss.toFixed(4), lr: m.lr.toExponential(2), gradNorm: m.gradNorm.toFixed(3), tps: Math.round(m.tokensPerSecond),
      }),
    }, writeFullModel);
    progress.stop();
    note(`${result.outcome}: ${result.steps}/${total} steps; ${what} in ${options.out}, metrics in ${options.out}/metrics.jsonl, curve in ${options.out}/loss-curve.svg`);
  } finally {
    progress.stop();
    process.off('SIGINT', onSigint);
  }
  return result;
}
