// `npx tsx bench/loss-memory.ts`: what the chunked loss (src/tensor/linear-cross-entropy.ts) saves in one
// rank-1 training step, measured: a Qwen2.5-0.5B-shaped model cut to a few layers (random bf16 weights, the
// real vocabulary of 151 936), one micro-batch of T tokens, forward + backward, on the CPU backend. Each path
// runs in a fresh process, so its peak RSS (getrusage's maxRSS) is its own: 'chunked' is today's trainer,
// 'logits' the same trainer with a hook on the logits, which makes it build the [T, V] logits as before.
// Reported beside the backend's own high-water mark of live storages and the estimate of src/train/memory.ts.
//
//   npx tsx bench/loss-memory.ts --tokens 2048 --layers 2 [--loss-chunk 110] [--out bench/results/x.json]
//
// --calibrate 1024,2048,4096 runs only today's path at each block size (each in its own process) and sets the
// estimator's figure beside both measurements (bench/results/2026-12-07-memory-calibration.json): its
// activations against the backend's step peak of live storages, and against peak RSS the RSS before the step
// (measured: runtime and weights) + the CPU matmul's WebAssembly memory (its data budget and the resident
// bf16 copies of the weights, src/kernels/cpu/matmul.ts) + the activations.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { Command } from 'commander';
import { getCpuBackend, initBackend } from '../src/tensor/engine.ts';
import { softwareRasterizerName } from '../src/kernels/webgpu/adapter-kind.ts';
import type { WebGpuBackend } from '../src/kernels/webgpu/index.ts';
import { backward } from '../src/tensor/autograd.ts';
import { div, tidy } from '../src/tensor/index.ts';
import { hookName } from '../src/model/hooks.ts';
import { withHooks } from '../src/model/hook-registry.ts';
import { dimsFromConfig } from '../src/model/load.ts';
import { QWEN25_05B, fastRandomBf16Qwen2Model, randomRankOneAdapters } from '../src/model/random-model.ts';
import { makeBatch } from '../src/train/data-batch.ts';
import { estimateTrainingMemory, formatBytes } from '../src/train/memory.ts';
import { expectedQwen2Tensors } from '../src/model/config.ts';
import { batchLossSum } from '../src/train/trainer.ts';
import { defaultLossChunkRows } from '../src/tensor/linear-cross-entropy.ts';
import { cpuMatmulMemoryBytes, peakRssBytes } from './step-memory.ts';

interface Options {
  tokens: number;
  layers: number;
  lossChunk?: number;
  mode?: 'chunked' | 'logits';
  out?: string;
  calibrate?: string;
  append?: boolean;
  checkpointDtype: 'f32' | 'bf16';
  backend: 'cpu' | 'webgpu';
  layerChunk?: number;
  offload?: boolean;
}

const program = new Command()
  .option('--tokens <n>', 'tokens in the micro-batch', Number, 2048)
  .option('--layers <n>', 'layers of the 0.5B shape', Number, 2)
  .option('--loss-chunk <n>', 'rows per loss chunk (default: defaultLossChunkRows(V))', Number)
  .option('--mode <mode>', 'internal: run one path in this process')
  .option('--out <file>', 'write the results as JSON')
  .option('--backend <name>', 'cpu or webgpu (the step peak is then the WebGPU buffer pool\'s high-water mark of live bytes)', 'cpu')
  .option('--layer-chunk <n>', 'Qwen2Model.layerTokenChunk: each layer\'s token-wise work (attention by query chunks, the MLP) in chunks of n tokens (default: whole layers)', Number)
  .option('--offload', 'Qwen2Model.offloadCheckpoints: layer checkpoints in host memory (WebGPU)')
  .option('--checkpoint-dtype <dtype>', 'the dtype of the layer checkpoints (f32 or bf16)', 'f32')
  .option('--calibrate <tokens>', 'comma-separated block sizes: the chunked path only, estimate vs measured at each (\'\' with --append: re-estimate the file\'s points)')
  .option('--append', 'with --calibrate: keep the points already in --out (same setup), re-estimating them');
program.parse();
const options = program.opts<Options>();
if (options.backend !== 'cpu' && options.backend !== 'webgpu') throw new Error(`bench/loss-memory.ts: --backend must be cpu or webgpu, not ${options.backend}`);
if (options.layerChunk !== undefined && !(Number.isInteger(options.layerChunk) && options.layerChunk > 0)) throw new Error(`bench/loss-memory.ts: --layer-chunk must be a positive integer, not ${options.layerChunk}`);
if (options.checkpointDtype !== 'f32' && options.checkpointDtype !== 'bf16') throw new Error(`bench/loss-memory.ts: --checkpoint-dtype must be f32 or bf16, not ${options.checkpointDtype}`);
const config = { ...QWEN25_05B, numHiddenLayers: options.layers };

interface StepResult {
  mode: 'chunked' | 'logits';
  loss: number;
  seconds: number;
  /** Peak RSS of the whole process (model included). */
  peakRssBytes: number;
  /** RSS just before the step: the model, adapters and the runtime. */
  rssBeforeStepBytes: number;
  /** The backend's high-water mark of live storage bytes during the step, less what was live before it. */
  backendStepPeakBytes: number;
  /** The device the step ran on. */
  device: string;
  /** WebGPU on a CPU adapter (lavapipe, llvmpipe), whose streaming matmul transposes [n, k] weights. */
  cpuAdapter: boolean;
  /** The signal the child died of after writing its result (a crash at exit), else null. */
  exitSignal?: string | null;
}

async function runStep(mode: 'chunked' | 'logits'): Promise<StepResult> {
  const backend = options.backend === 'cpu' ? getCpuBackend() : (await initBackend('webgpu')).backend;
  const model = fastRandomBf16Qwen2Model(config, backend);
  model.adapters = randomRankOneAdapters(model.dims, 1, backend);
  model.gradientCheckpointing = true;
  model.checkpointDtype = options.checkpointDtype;
  model.layerTokenChunk = options.layerChunk ?? null;
  if (options.offload) {
    if (!('offloadCheckpoints' in model)) throw new Error('bench/loss-memory.ts --offload: this Qwen2Model has no offloadCheckpoints');
    Object.assign(model, { offloadCheckpoints: true });
  }
  const T = options.tokens;
  const inputIds = Int32Array.from({ length: T }, (_, i) => (i * 7919) % config.vocabSize);
  const batch = makeBatch([{ inputIds, lossMask: new Uint8Array(T).fill(1) }], 0);
  const rssBeforeStepBytes = process.memoryUsage().rss;
  const liveBefore = backend.memory().liveBytes;
  backend.resetPeak();
  const started = performance.now();
  const step = async () => {
    const loss = tidy(() => div(batchLossSum(model, batch, options.lossChunk), batch.tokens));
    // Offloaded checkpoints reach host memory between the forward and the backward.
    await (model as { settleOffloadedCheckpoints?: () => Promise<void> }).settleOffloadedCheckpoints?.();
    backward(loss);
    return loss;
  };
  const loss = mode === 'logits' ? await withHooks(model, [[hookName.logits(), (value) => value]], step) : await step();
  const value = await loss.item();
  const seconds = (performance.now() - started) / 1000;
  return {
    mode, loss: value, seconds, peakRssBytes: peakRssBytes(), rssBeforeStepBytes,
    backendStepPeakBytes: backend.memory().peakBytes - liveBefore,
    device: backend.description,
    cpuAdapter: backend.name === 'webgpu' && softwareRasterizerName((backend as WebGpuBackend).runtime.acquired.adapterInfo) !== null,
  };
}

function runInProcess(mode: 'chunked' | 'logits', tokens: number): StepResult & { exitSignal: string | null } {
  const args = ['--import', 'tsx', new URL(import.meta.url).pathname, '--mode', mode, '--tokens', String(tokens), '--layers', String(options.layers), '--checkpoint-dtype', options.checkpointDtype, '--backend', options.backend];
  if (options.lossChunk) args.push('--loss-chunk', String(options.lossChunk));
  if (options.layerChunk) args.push('--layer-chunk', String(options.layerChunk));
  if (options.offload) args.push('--offload');
  try {
    const stdout = execFileSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 20 });
    return { ...JSON.parse(stdout.trim().split('\n').at(-1)!) as StepResult, exitSignal: null };
  } catch (error) {
    // A step that finished and wrote its result, then crashed while exiting, is a measurement (exitSignal says so).
    const { stdout, signal } = error as { stdout?: string; signal?: string | null };
    const last = (stdout ?? '').trim().split('\n').at(-1) ?? '';
    if (!signal || !last.startsWith('{')) throw error;
    return { ...JSON.parse(last) as StepResult, exitSignal: signal };
  }
}

/** One block size of a calibration: what was measured (kept as it is when a file is extended) and the estimates beside it. */
interface CalibrationPoint {
  tokens: number;
  loss: number;
  seconds: number;
  activations: { estimateBytes: number; measuredStepPeakOfLiveStoragesBytes: number; ratio: number; terms: unknown };
  rss: { estimateBytes: number | null; measuredPeakBytes: number; ratio: number | null; rssBeforeStepBytes: number; cpuMatmulMemoryBytes: number | null };
  /** The signal the step's process died of after writing its result (a crash at exit), else null. */
  exitSignal: string | null;
}

/** The estimator's figures beside a point's measurements (rss only on the CPU backend, whose WebAssembly memory it models). */
function estimatePoint(point: Pick<CalibrationPoint, 'tokens' | 'loss' | 'seconds' | 'exitSignal'> & { peak: number; peakRss: number; rssBefore: number }, weightBytes: number, cpuAdapter: boolean): CalibrationPoint {
  const dims = dimsFromConfig(config);
  const chunk = options.lossChunk ?? defaultLossChunkRows(dims.vocab);
  const estimate = estimateTrainingMemory(dims, weightBytes, model0AdapterParameters(), 1, point.tokens, true, {
    lossChunk: chunk, checkpointDtype: options.checkpointDtype, transposedHeadBytesPerValue: cpuAdapter ? 2 : 0, layerTokenChunk: options.layerChunk ?? null,
    offloadCheckpoints: options.offload ?? false,
  });
  const matmulMemory = options.backend === 'cpu' ? cpuMatmulMemoryBytes(weightBytes) : null;
  const rssEstimate = matmulMemory === null ? null : point.rssBefore + matmulMemory + estimate.activations;
  const result: CalibrationPoint = {
    tokens: point.tokens, loss: point.loss, seconds: point.seconds, exitSignal: point.exitSignal,
    activations: { estimateBytes: estimate.activations, measuredStepPeakOfLiveStoragesBytes: point.peak, ratio: estimate.activations / point.peak, terms: estimate.terms },
    rss: { estimateBytes: rssEstimate, measuredPeakBytes: point.peakRss, ratio: rssEstimate === null ? null : rssEstimate / point.peakRss, rssBeforeStepBytes: point.rssBefore, cpuMatmulMemoryBytes: matmulMemory },
  };
  console.log(`T = ${point.tokens}: activations estimate ${formatBytes(estimate.activations)} vs step peak of live storages ${formatBytes(point.peak)} (${result.activations.ratio.toFixed(3)})` +
    (rssEstimate === null ? '' : `; peak RSS estimate ${formatBytes(rssEstimate)} vs measured ${formatBytes(point.peakRss)} (${result.rss.ratio!.toFixed(3)})`));
  return result;
}

if (options.calibrate !== undefined) {
  const weightBytes = expectedQwen2Tensors(config).reduce((n, t) => n + 2 * t.shape.reduce((a, b) => a * b, 1), 0);
  const chunk = options.lossChunk ?? defaultLossChunkRows(dimsFromConfig(config).vocab);
  const setup = { backend: options.backend, checkpointDtype: options.checkpointDtype, layers: options.layers, lossChunkRows: chunk, layerTokenChunk: options.layerChunk ?? null, offloadCheckpoints: options.offload ?? false };
  // --append: the points already in --out (same setup) are kept, measurements as they are, estimates redone.
  const earlier = options.append && options.out && fs.existsSync(options.out) ? JSON.parse(fs.readFileSync(options.out, 'utf8')) as { setup?: typeof setup; device?: string; cpuAdapter?: boolean; points: CalibrationPoint[] } : null;
  // Files from before --layer-chunk have no layerTokenChunk (whole layers); the first has no setup (CPU, f32, 2 layers).
  const earlierSetup: typeof setup = { ...{ backend: 'cpu', checkpointDtype: 'f32', layers: 2, lossChunkRows: chunk }, layerTokenChunk: null, offloadCheckpoints: false, ...earlier?.setup };
  if (earlier && (Object.keys(setup) as (keyof typeof setup)[]).some((key) => earlierSetup[key] !== setup[key])) {
    throw new Error(`bench/loss-memory.ts --append: ${options.out} was measured with ${JSON.stringify(earlierSetup)}, not ${JSON.stringify(setup)}`);
  }
  const tokensList = options.calibrate === '' ? [] : options.calibrate.split(',').map(Number);
  const measured = new Map((earlier?.points ?? []).map((p) => [p.tokens, {
    tokens: p.tokens, loss: p.loss, seconds: p.seconds, peak: p.activations.measuredStepPeakOfLiveStoragesBytes, peakRss: p.rss.measuredPeakBytes, rssBefore: p.rss.rssBeforeStepBytes, exitSignal: p.exitSignal ?? null,
  }]));
  let device = earlier?.device ?? (options.backend === 'cpu' ? 'cpu' : '');
  let cpuAdapter = earlier?.cpuAdapter ?? false;
  for (const tokens of tokensList) {
    const run = runInProcess('chunked', tokens);
    device = run.device;
    cpuAdapter = run.cpuAdapter;
    measured.set(tokens, { tokens, loss: run.loss, seconds: run.seconds, peak: run.backendStepPeakBytes, peakRss: run.peakRssBytes, rssBefore: run.rssBeforeStepBytes, exitSignal: run.exitSignal });
  }
  const points = [...measured.values()].sort((x, y) => x.tokens - y.tokens).map((p) => estimatePoint(p, weightBytes, cpuAdapter));
  const result = {
    what: `src/train/memory.ts against one measured rank-1 training step (forward + backward, gradient checkpointing, ${options.checkpointDtype} checkpoints, chunked loss) on the ${options.backend} backend, each block size in its own process`,
    date: new Date().toISOString(),
    setup, device, cpuAdapter,
    shape: { ...config, note: 'Qwen2.5-0.5B-Instruct with numHiddenLayers cut; random bf16 weights' },
    lossChunkRows: chunk,
    weightBytes,
    measuredPeak: options.backend === 'cpu'
      ? 'the CPU backend\'s high-water mark of live storage bytes during the step, less what was live before it; and the process\'s peak RSS'
      : 'the WebGPU buffer pool\'s high-water mark of live buffer bytes (memory().peakBytes) during the step, less what was live before it (the weights)',
    machine: `${process.platform} ${process.arch}, Node ${process.version}, 2 shared CPU cores (other jobs running: seconds are noisy, bytes are not)`,
    rssModel: options.backend === 'cpu'
      ? 'RSS before the step (measured: Node, the bf16 weights) + the CPU matmul\'s WebAssembly memory (192 MiB data region + resident bf16 weights, src/kernels/cpu/matmul.ts) + the estimated activations'
      : 'not estimated on WebGPU (the device memory is the figure; on a CPU adapter it also lands in RSS)',
    points,
  };
  if (options.out) fs.writeFileSync(options.out, `${JSON.stringify(result, null, 2)}\n`);
} else if (options.mode) {
  // Written synchronously: Dawn can crash while tearing down at exit (seen on lavapipe), which would lose a
  // pending asynchronous write to the pipe.
  fs.writeSync(1, `${JSON.stringify(await runStep(options.mode))}\n`);
} else {
  const runs: StepResult[] = [];
  for (const mode of ['logits', 'chunked'] as const) {
    runs.push(runInProcess(mode, options.tokens));
    const r = runs.at(-1)!;
    console.log(`${mode}: loss ${r.loss.toFixed(6)}, ${r.seconds.toFixed(1)} s, peak RSS ${formatBytes(r.peakRssBytes)} ` +
      `(${formatBytes(r.rssBeforeStepBytes)} before the step), backend step peak ${formatBytes(r.backendStepPeakBytes)}`);
  }
  const dims = dimsFromConfig(config);
  const adapterParameters = model0AdapterParameters();
  const chunk = options.lossChunk ?? defaultLossChunkRows(dims.vocab);
  const chunked = estimateTrainingMemory(dims, 0, adapterParameters, 1, options.tokens, true, { lossChunk: chunk, checkpointDtype: options.checkpointDtype });
  // The estimate before the chunked loss: the loss phase held the [T, V] logits, their gradient and a
  // temporary, f32, in place of the two [chunk, V] buffers.
  const { terms } = chunked;
  const lossBefore = terms.loss - 4 * Math.min(options.tokens, chunk) * dims.vocab * 2 + 4 * options.tokens * dims.vocab * 3;
  const activationsBefore = terms.checkpoints + Math.max(terms.forward, terms.layer, lossBefore);
  const result = {
    what: 'one rank-1 training step (forward + backward, gradient checkpointing) on the CPU backend, old [T, V] logits path vs the chunked loss',
    date: new Date().toISOString(),
    shape: { ...config, note: 'Qwen2.5-0.5B-Instruct with numHiddenLayers cut; random bf16 weights' },
    tokens: options.tokens,
    lossChunkRows: chunk,
    machine: `${process.platform} ${process.arch}, Node ${process.version}, 2 shared CPU cores (other jobs running: timings are noisy)`,
    runs,
    estimate: {
      note: 'src/train/memory.ts activations (weights and optimizer excluded), before and after the chunked loss',
      activationsBeforeBytes: activationsBefore,
      activationsAfterBytes: chunked.activations,
    },
  };
  console.log(`estimate of the step's activations: ${formatBytes(result.estimate.activationsBeforeBytes)} -> ${formatBytes(result.estimate.activationsAfterBytes)}`);
  console.log(`loss difference: ${Math.abs(runs[0]!.loss - runs[1]!.loss).toExponential(2)}`);
  if (options.out) fs.writeFileSync(options.out, `${JSON.stringify(result, null, 2)}\n`);
}

function model0AdapterParameters(): number {
  const backend = getCpuBackend();
  const dims = dimsFromConfig(config);
  const adapters = randomRankOneAdapters(dims, 1, backend);
  const n = adapters.parameters().reduce((s, p) => s + p.size, 0);
  adapters.dispose();
  return n;
}
