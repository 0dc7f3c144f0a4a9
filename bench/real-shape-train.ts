// `npx tsx bench/real-shape-train.ts`: rank-1 training of a Qwen2.5-0.5B-shaped model at a long block, measured
// (issue 18, must 6). A checkpoint of the real shape (24 layers, hidden 896, intermediate 4864, 14 heads, 2 kv
// heads, vocabulary 151 936, tied embeddings, random bf16 weights) is written once under the temp folder and
// loaded as `rank1 train` loads one; then the trainer (src/train/trainer.ts) runs rank-1 adapters on all 7
// projections, micro-batch 1, gradient checkpointing, the chunked loss, for --steps steps of one --block-token
// example. Recorded: each step's wall time, CPU time, loss and tokens/s; the backend's high-water mark of live
// bytes (the WebGPU buffer pool's on a GPU) against src/train/memory.ts's estimate for the shape, the block and
// the step as the model runs it (checkpoint dtype, layer chunk); on the CPU also peak RSS against the same RSS
// model as bench/loss-memory.ts. --check-unchunked first trains --check-steps steps at a short block both ways
// — the chunked loss, and the full [T, V] logits with plain cross-entropy (a hook on the logits makes the
// trainer build them, as test/train-chunked-loss.test.ts does) — and reports their relative difference (exit
// 1 past 1e-4). The JSON is rewritten after every step. The checkpoint build and the check run in child
// processes, so the training's peak RSS is its own.
//
//   npx tsx bench/real-shape-train.ts --layers 2 --block 1024 --steps 2 --check-unchunked     # a smoke run
//   nice -n 10 npx tsx bench/real-shape-train.ts --block 8192 --steps 3 --check-unchunked      # the real shape
//   npx tsx bench/real-shape-train.ts --backend webgpu --hardware --block 20000 --steps 2      # bench/gpu.sh
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import type { Backend } from '../src/kernels/backend.ts';
import { getCpuBackend, initBackend } from '../src/tensor/engine.ts';
import { softwareRasterizerName, type WebGpuBackend } from '../src/kernels/webgpu/index.ts';
import { residentStats } from '../src/kernels/cpu/matmul.ts';
import { writeCheckpoint } from '../src/model/checkpoint.ts';
import { loadQwen2Checkpoint, modelTensors } from '../src/model/load.ts';
import { hookName } from '../src/model/hooks.ts';
import { withHooks } from '../src/model/hook-registry.ts';
import type { Qwen2Config } from '../src/model/config.ts';
import type { Qwen2Model } from '../src/model/qwen2.ts';
import { QWEN25_05B, fastRandomBf16Qwen2Model } from '../src/model/random-model.ts';
import { defaultLossChunkRows } from '../src/tensor/linear-cross-entropy.ts';
import { DEFAULT_CHECKPOINT_DTYPE, estimateTrainingMemory, formatBytes, type MemoryEstimate } from '../src/train/memory.ts';
import { PAPER_TRAINING, train, type StepMetrics, type TrainSettings } from '../src/train/trainer.ts';
import type { TokenizedExample } from '../src/train/data-rows.ts';
import { checkTrainingMemory } from '../src/cli/train-command.ts';
import { describeEnvironment, packageVersions, repoRoot } from './environment.ts';
import { cpuMatmulMemoryBytes, peakRssBytes, rankOneAdapterParameters, runBenchChild } from './step-memory.ts';

interface Options {
  backend: 'cpu' | 'webgpu';
  hardware: boolean;
  layers: number;
  block: number;
  steps: number;
  checkpointDtype: 'f32' | 'bf16';
  layerChunk?: number;
  lossChunk?: number;
  checkUnchunked: boolean;
  checkBlock: number;
  checkLayers?: number;
  checkSteps: number;
  timeLimit?: number;
  cacheDir: string;
  out?: string;
  part?: 'build' | 'check';
}

const SCRIPT = fileURLToPath(import.meta.url);
/** The largest relative difference between the chunked and unchunked losses that counts as equal. */
const CHECK_TOLERANCE = 1e-4;

function positiveInteger(flag: string): (raw: string) => number {
  return (raw) => {
    const value = Number(raw);
    if (!Number.isInteger(value) || value < 1) throw new Error(`bench/real-shape-train.ts: ${flag} must be a positive integer, got "${raw}"`);
    return value;
  };
}

function nonNegativeInteger(flag: string): (raw: string) => number {
  return (raw) => (raw.trim() === '0' ? 0 : positiveInteger(flag)(raw));
}

const program = new Command()
  .addOption(new Option('--backend <name>', 'cpu or webgpu').choices(['cpu', 'webgpu']).default('cpu'))
  .option('--hardware', 'refuse a software WebGPU adapter (lavapipe, SwiftShader): for bench/gpu.sh', false)
  .option('--layers <n>', 'layers of the 0.5B shape (24 is Qwen2.5-0.5B)', positiveInteger('--layers'), QWEN25_05B.numHiddenLayers)
  .option('--block <n>', 'tokens in the one example of each step', positiveInteger('--block'), 8192)
  .option('--steps <n>', 'optimizer steps', positiveInteger('--steps'), 2)
  .addOption(new Option('--checkpoint-dtype <dtype>', 'dtype of the gradient checkpoints').choices(['f32', 'bf16']).default(DEFAULT_CHECKPOINT_DTYPE))
  .option('--layer-chunk <tokens>', 'tokens per chunk of each layer\'s MLP (0: whole layers; default: the trainer\'s)', nonNegativeInteger('--layer-chunk'))
  .option('--loss-chunk <n>', 'rows per chunk of the loss (default: defaultLossChunkRows(V))', positiveInteger('--loss-chunk'))
  .option('--check-unchunked', 'first compare the chunked loss with the full-logits loss at --check-block', false)
  .option('--check-block <n>', 'tokens of the unchunked check', positiveInteger('--check-block'), 256)
  .option('--check-layers <n>', 'layers of the unchunked check (default: --layers)', positiveInteger('--check-layers'))
  .option('--check-steps <n>', 'optimizer steps of the unchunked check (each path)', positiveInteger('--check-steps'), 2)
  .option('--time-limit <seconds>', 'start no step that would end past this many seconds from the script\'s start (the last step\'s time ahead)', positiveInteger('--time-limit'))
  .option('--cache-dir <dir>', 'where the random checkpoints are kept between runs', path.join(os.tmpdir(), 'rank1-real-shape'))
  .option('--out <file>', 'the results JSON (default: bench/results/<date>-real-shape-train-<backend>-<L>L-block<T>.json)')
  .addOption(new Option('--part <part>', 'internal: one part in this process').choices(['build', 'check']).hideHelp());
program.parse();
const options = program.opts<Options>();

function shape(layers: number): Qwen2Config {
  return { ...QWEN25_05B, numHiddenLayers: layers };
}

function checkpointDir(layers: number): string {
  return path.join(options.cacheDir, `qwen2.5-0.5b-shape-${layers}L-bf16`);
}

/** Part 'build': the random bf16 checkpoint, written to a temporary folder and renamed, so a cached one is whole. */
async function buildCheckpoint(layers: number): Promise<{ dir: string; seconds: number }> {
  const started = performance.now();
  const dir = checkpointDir(layers);
  const temporary = `${dir}.partial-${process.pid}`;
  const model = fastRandomBf16Qwen2Model(shape(layers), getCpuBackend());
  try {
    await writeCheckpoint(temporary, shape(layers), modelTensors(model), { dtype: 'bf16' });
  } finally {
    model.dispose();
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(temporary, dir);
  return { dir, seconds: (performance.now() - started) / 1000 };
}

/** The cached checkpoint of `layers` layers, built in a child process when missing. */
function ensureCheckpoint(layers: number): { dir: string; built: boolean } {
  const dir = checkpointDir(layers);
  if (fs.existsSync(path.join(dir, 'config.json'))) return { dir, built: false };
  fs.mkdirSync(options.cacheDir, { recursive: true });
  console.error(`building the random ${layers}-layer checkpoint in ${dir}`);
  runBenchChild(SCRIPT, ['--part', 'build', '--layers', String(layers), '--cache-dir', options.cacheDir], `building the ${layers}-layer checkpoint`);
  return { dir, built: true };
}

async function openBackend(): Promise<Backend> {
  const { backend } = await initBackend(options.backend);
  if (backend.name === 'webgpu' && options.hardware) {
    const software = softwareRasterizerName((backend as WebGpuBackend).runtime.acquired.adapterInfo);
    if (software) throw new Error(`--hardware: the WebGPU adapter is a software rasterizer (${software}: ${backend.description}), not a GPU`);
  }
  return backend;
}

/** One example of `tokens` pseudo-random ids (an LCG), every target scored. */
function randomExample(tokens: number, vocab: number, seed: number): TokenizedExample {
  let state = seed >>> 0;
  const inputIds = Int32Array.from({ length: tokens }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % vocab;
  });
  return { inputIds, lossMask: new Uint8Array(tokens).fill(1) };
}

/** The trainer's settings: the paper's, one example per step, no warmup (so every step moves the adapters). */
function settingsFor(steps: number): TrainSettings {
  return {
    ...PAPER_TRAINING, mode: 'adapter', epochs: steps, maxSteps: steps, batchSize: 1, microBatch: 1, warmupRatio: 0,
    gradientCheckpointing: true, checkpointDtype: options.checkpointDtype, saveEvery: 1_000_000, keepCheckpoints: 1,
    ...(options.lossChunk ? { lossChunk: options.lossChunk } : {}),
    ...(options.layerChunk !== undefined ? { layerTokenChunk: options.layerChunk } : {}),
  };
}

async function trainQuietly(model: Qwen2Model, example: TokenizedExample, steps: number, onStep?: (m: StepMetrics) => void, shouldStop?: () => boolean) {
  const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rank1-real-shape-run-'));
  try {
    return await train(model, [example], settingsFor(steps), { outDir, log: () => {}, ...(onStep ? { onStep } : {}), ...(shouldStop ? { shouldStop } : {}) });
  } finally {
    fs.rmSync(outDir, { recursive: true, force: true });
  }
}

interface CheckResult {
  layers: number;
  block: number;
  steps: number;
  chunked: { losses: number[]; gradNorms: number[]; seconds: number };
  unchunked: { losses: number[]; gradNorms: number[]; seconds: number };
  maxRelativeLossDifference: number;
  maxRelativeGradNormDifference: number;
  tolerance: number;
  equal: boolean;
}

function maxRelativeDifference(a: readonly number[], b: readonly number[]): number {
  return a.reduce((worst, x, i) => Math.max(worst, Math.abs(x - b[i]!) / Math.max(Math.abs(b[i]!), Number.MIN_VALUE)), 0);
}

/**
 * Part 'check': --check-steps steps at --check-block through the chunked loss, then the same from the same
 * initial adapters through the full logits (the hook makes batchLossSum build them and run crossEntropyRows).
 */
async function checkUnchunked(): Promise<CheckResult> {
  const backend = await openBackend();
  const layers = options.checkLayers ?? options.layers;
  const example = randomExample(options.checkBlock, QWEN25_05B.vocabSize, 7);
  const run = async (unchunked: boolean) => {
    const { model } = await loadQwen2Checkpoint(checkpointDir(layers), backend);
    const started = performance.now();
    try {
      const go = () => trainQuietly(model, example, options.checkSteps);
      const result = unchunked ? await withHooks(model, [[hookName.logits(), (value) => value]], go) : await go();
      return { losses: result.metrics.map((m) => m.loss), gradNorms: result.metrics.map((m) => m.gradNorm), seconds: (performance.now() - started) / 1000 };
    } finally {
      model.dispose();
    }
  };
  const chunked = await run(false);
  const unchunked = await run(true);
  const lossDifference = maxRelativeDifference(chunked.losses, unchunked.losses);
  return {
    layers, block: options.checkBlock, steps: options.checkSteps, chunked, unchunked,
    maxRelativeLossDifference: lossDifference, maxRelativeGradNormDifference: maxRelativeDifference(chunked.gradNorms, unchunked.gradNorms),
    tolerance: CHECK_TOLERANCE, equal: lossDifference <= CHECK_TOLERANCE,
  };
}

interface StepRecord {
  step: number;
  seconds: number;
  loss: number;
  gradNorm: number;
  tokensPerSecond: number;
  /** CPU time of this process (every thread, user + system) in the step: steadier than wall time on a shared machine. */
  cpuSeconds: number;
  rssBytes: number;
  backendPeakBytes: number;
}

/**
 * src/train/memory.ts's estimate for the step as the model is set to run it (the trainer sets its checkpoint
 * dtype, layer chunk and offload), with a WebGPU CPU adapter's transposed LM head where that applies.
 */
function estimateFor(model: Qwen2Model, backend: Backend, weightBytes: number): MemoryEstimate {
  const cpuAdapter = backend.name === 'webgpu' && softwareRasterizerName((backend as WebGpuBackend).runtime.acquired.adapterInfo) !== null;
  return estimateTrainingMemory(model.dims, weightBytes, rankOneAdapterParameters(model.dims), 1, options.block, true, {
    ...(options.lossChunk ? { lossChunk: options.lossChunk } : {}),
    checkpointDtype: model.checkpointDtype,
    layerTokenChunk: model.layerTokenChunk || null,
    offloadCheckpoints: model.offloadCheckpoints,
    transposedHeadBytesPerValue: cpuAdapter ? (model.lmHeadWeight.dtype === 'f32' ? 4 : 2) : 0,
  });
}

/** The memory figures of the run: the estimate beside what was measured, ratio = estimate / measured. */
function memoryReport(backend: Backend, estimate: MemoryEstimate, weightBytes: number, rssBeforeTrainingBytes: number) {
  const backendPeakBytes = backend.memory().peakBytes;
  const report: Record<string, unknown> = {
    estimate: { ...estimate, note: 'src/train/memory.ts estimateTrainingMemory for this shape and block (as rank1 train\'s memory check): weights + optimizer + activations' },
    backendPeak: {
      note: backend.name === 'webgpu'
        ? 'the WebGPU buffer pool\'s high-water mark of live bytes since the model was loaded (weights included)'
        : 'the CPU backend\'s high-water mark of live storage bytes since the model was loaded (weights included)',
      measuredBytes: backendPeakBytes, estimateBytes: estimate.total, ratio: estimate.total / backendPeakBytes,
    },
  };
  if (backend.name === 'cpu') {
    const rssEstimate = rssBeforeTrainingBytes + cpuMatmulMemoryBytes(weightBytes) + estimate.optimizer + estimate.activations;
    report.rss = {
      note: 'RSS before training (measured: Node, the loaded bf16 weights) + the CPU matmul\'s WebAssembly memory (bench/step-memory.ts) + optimizer + activations, against getrusage\'s peak RSS',
      measuredPeakBytes: peakRssBytes(), estimateBytes: rssEstimate, ratio: rssEstimate / peakRssBytes(), rssBeforeTrainingBytes,
      cpuMatmulMemoryBytes: cpuMatmulMemoryBytes(weightBytes), cpuMatmulResident: residentStats(),
    };
  }
  return report;
}

function defaultOut(): string {
  const date = new Date().toISOString().slice(0, 10);
  return path.join(repoRoot, 'bench/results', `${date}-real-shape-train-${options.backend}-${options.layers}L-block${options.block}.json`);
}

async function main(): Promise<number> {
  const out = options.out ?? defaultOut();
  const config = shape(options.layers);
  const result: Record<string, unknown> = {
    what: 'rank-1 adapters (all 7 projections, every layer) trained on a Qwen2.5-0.5B-shaped checkpoint with random bf16 weights: micro-batch 1, gradient checkpointing, the chunked loss; one example of --block pseudo-random tokens, every target scored',
    date: new Date().toISOString(),
    command: `npx tsx bench/real-shape-train.ts ${process.argv.slice(2).join(' ')}`,
    shape: { ...config, note: 'Qwen2.5-0.5B-Instruct\'s config.json with numHiddenLayers as run; random bf16 weights' },
    options: { ...options, lossChunkRows: options.lossChunk ?? defaultLossChunkRows(config.vocabSize) },
    environment: describeEnvironment({ reason: `not probed (the run used the backend in 'backend')` }),
    versions: packageVersions(),
    status: 'starting',
  };
  const write = () => fs.writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  try {
    const backend = await openBackend(); // first, so that a missing or software adapter fails before any work
    result.backend = backend.description;
    result.checkpoint = ensureCheckpoint(options.layers);
    if (options.checkUnchunked) {
      const layers = options.checkLayers ?? options.layers;
      ensureCheckpoint(layers);
      const args = ['--part', 'check', ...process.argv.slice(2).filter((a) => a !== '--check-unchunked')];
      const check = runBenchChild<CheckResult>(SCRIPT, args, 'the unchunked check');
      result.checkUnchunked = check;
      console.log(`check (${check.layers} layers, block ${check.block}, ${check.steps} steps): chunked losses ${check.chunked.losses.map((l) => l.toFixed(6)).join(', ')} vs ` +
        `unchunked ${check.unchunked.losses.map((l) => l.toFixed(6)).join(', ')}: relative difference ${check.maxRelativeLossDifference.toExponential(2)} ` +
        `(gradient norms ${check.maxRelativeGradNormDifference.toExponential(2)}) — ${check.equal ? 'equal' : `NOT equal (tolerance ${CHECK_TOLERANCE})`}`);
      write();
    }

    const loadStarted = performance.now();
    const { model } = await loadQwen2Checkpoint(checkpointDir(options.layers), backend);
    result.loadSeconds = (performance.now() - loadStarted) / 1000;
    const weightBytes = [...modelTensors(model).values()].reduce((n, t) => n + t.size * (t.dtype === 'f32' ? 4 : 2), 0);
    // As the trainer will set them (it sets them again from the same settings, or from its defaults: the
    // estimate is redone from the model after the first step).
    model.checkpointDtype = options.checkpointDtype;
    if (options.layerChunk !== undefined) model.layerTokenChunk = options.layerChunk;
    let estimate = estimateFor(model, backend, weightBytes);
    // The CLI's own check: prints its estimate and refuses a run the machine cannot hold.
    checkTrainingMemory(model, 'adapter', { microBatch: 1, gradientCheckpointing: true, checkpointDtype: options.checkpointDtype, ...(options.lossChunk ? { lossChunk: options.lossChunk } : {}) }, options.block);

    result.memory = { estimate };
    const steps: StepRecord[] = [];
    result.steps = steps;
    result.status = 'training';
    write();
    const rssBeforeTrainingBytes = process.memoryUsage().rss;
    backend.resetPeak();
    let secondsBefore = 0;
    let cpuBefore = process.cpuUsage();
    const onStep = (m: StepMetrics) => {
      estimate = estimateFor(model, backend, weightBytes);
      result.layerTokenChunk = model.layerTokenChunk;
      const seconds = m.seconds - secondsBefore;
      secondsBefore = m.seconds;
      const cpu = process.cpuUsage(cpuBefore);
      cpuBefore = process.cpuUsage();
      const cpuSeconds = (cpu.user + cpu.system) / 1e6;
      steps.push({ step: m.step, seconds, loss: m.loss, gradNorm: m.gradNorm, tokensPerSecond: m.tokensPerSecond, cpuSeconds, rssBytes: process.memoryUsage().rss, backendPeakBytes: backend.memory().peakBytes });
      console.log(`step ${m.step}/${options.steps}: ${seconds.toFixed(1)} s (${cpuSeconds.toFixed(1)} s of CPU), loss ${m.loss.toFixed(6)}, grad-norm ${m.gradNorm.toFixed(4)}, ${m.tokensPerSecond.toFixed(1)} tok/s, ` +
        `backend peak ${formatBytes(backend.memory().peakBytes)}${backend.name === 'cpu' ? `, peak RSS ${formatBytes(peakRssBytes())}` : ''}`);
      result.memory = memoryReport(backend, estimate, weightBytes, rssBeforeTrainingBytes);
      write();
    };
    // Stop before a step that would end past --time-limit (seconds since the process started: performance.now()),
    // taking the last step's time as the next one's.
    const shouldStop = () => options.timeLimit !== undefined && steps.length > 0 &&
      performance.now() / 1000 + steps.at(-1)!.seconds > options.timeLimit;
    const example = randomExample(options.block, config.vocabSize, 1);
    const run = await trainQuietly(model, example, options.steps, onStep, shouldStop);
    const later = steps.length > 1 ? steps.slice(1) : steps; // the first step also warms up (resident weights, shaders)
    result.summary = {
      stepsRun: run.steps,
      stepsInMeans: later.map((r) => r.step),
      stoppedBy: run.outcome === 'interrupted' ? `--time-limit ${options.timeLimit} s` : null,
      firstStepSeconds: steps[0]?.seconds,
      meanSecondsPerStepAfterFirst: later.reduce((s, r) => s + r.seconds, 0) / later.length,
      tokensPerSecondAfterFirst: options.block / (later.reduce((s, r) => s + r.seconds, 0) / later.length),
      meanCpuSecondsPerStepAfterFirst: later.reduce((s, r) => s + r.cpuSeconds, 0) / later.length,
      loadAverageAtEnd: os.loadavg().map((l) => Math.round(l * 100) / 100),
    };
    result.memory = memoryReport(backend, estimate, weightBytes, rssBeforeTrainingBytes);
    result.status = run.outcome === 'completed' ? 'completed' : `stopped after ${run.steps} of ${options.steps} steps by --time-limit`;
    model.dispose();
    const memory = result.memory as { backendPeak: { measuredBytes: number; estimateBytes: number; ratio: number }; rss?: { measuredPeakBytes: number; estimateBytes: number; ratio: number } };
    console.log(`memory: estimate ${formatBytes(estimate.total)} (weights ${formatBytes(estimate.weights)}, activations ${formatBytes(estimate.activations)}, peak phase ${estimate.terms.peak}) ` +
      `vs backend peak ${formatBytes(memory.backendPeak.measuredBytes)} (${memory.backendPeak.ratio.toFixed(3)})` +
      (memory.rss ? `; RSS model ${formatBytes(memory.rss.estimateBytes)} vs peak RSS ${formatBytes(memory.rss.measuredPeakBytes)} (${memory.rss.ratio.toFixed(3)})` : ''));
    if (run.outcome !== 'completed') console.log(`stopped after ${run.steps} of ${options.steps} steps: the next would have ended past --time-limit ${options.timeLimit} s`);
    write();
    console.log(`wrote ${path.relative(process.cwd(), out)}`);
    const check = result.checkUnchunked as CheckResult | undefined;
    if (check && !check.equal) {
      console.error(`real-shape-train: the chunked loss differs from the unchunked one by ${check.maxRelativeLossDifference.toExponential(2)} (relative), over the tolerance ${CHECK_TOLERANCE}`);
      return 1;
    }
    return 0;
  } catch (error) {
    result.status = 'failed';
    result.error = (error as Error).message;
    write();
    console.error(`real-shape-train: ${(error as Error).message} (partial results in ${out})`);
    return 1;
  }
}

if (options.part === 'build') {
  console.log(JSON.stringify(await buildCheckpoint(options.layers)));
  process.exit(0);
} else if (options.part === 'check') {
  console.log(JSON.stringify(await checkUnchunked()));
  process.exit(0);
} else {
  process.exit(await main());
}
