// `npx tsx bench/loss-memory.ts`: what the chunked loss (src/tensor/linear-cross-entropy.ts) saves in one
// rank-1 training step, measured: a Qwen2.5-0.5B-shaped model cut to a few layers (random bf16 weights, the
// real vocabulary of 151 936), one micro-batch of T tokens, forward + backward, on the CPU backend. Each path
// runs in a fresh process, so its peak RSS (getrusage's maxRSS) is its own: 'chunked' is today's trainer,
// 'logits' the same trainer with a hook on the logits, which makes it build the [T, V] logits as before.
// Reported beside the backend's own high-water mark of live storages and the estimate of src/train/memory.ts.
//
//   npx tsx bench/loss-memory.ts --tokens 2048 --layers 2 [--loss-chunk 110] [--out bench/results/x.json]
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { Command } from 'commander';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { backward } from '../src/tensor/autograd.ts';
import { div, tidy } from '../src/tensor/index.ts';
import { hookName } from '../src/model/hooks.ts';
import { withHooks } from '../src/model/hook-registry.ts';
import { dimsFromConfig } from '../src/model/load.ts';
import { QWEN25_05B, fastRandomBf16Qwen2Model, randomRankOneAdapters } from '../src/model/random-model.ts';
import { makeBatch } from '../src/train/data-batch.ts';
import { estimateTrainingMemory, formatBytes } from '../src/train/memory.ts';
import { batchLossSum } from '../src/train/trainer.ts';
import { defaultLossChunkRows } from '../src/tensor/linear-cross-entropy.ts';

interface Options {
  tokens: number;
  layers: number;
  lossChunk?: number;
  mode?: 'chunked' | 'logits';
  out?: string;
}

const program = new Command()
  .option('--tokens <n>', 'tokens in the micro-batch', Number, 2048)
  .option('--layers <n>', 'layers of the 0.5B shape', Number, 2)
  .option('--loss-chunk <n>', 'rows per loss chunk (default: defaultLossChunkRows(V))', Number)
  .option('--mode <mode>', 'internal: run one path in this process')
  .option('--out <file>', 'write the results as JSON');
program.parse();
const options = program.opts<Options>();
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
}

async function runStep(mode: 'chunked' | 'logits'): Promise<StepResult> {
  const backend = getCpuBackend();
  const model = fastRandomBf16Qwen2Model(config, backend);
  model.adapters = randomRankOneAdapters(model.dims, 1, backend);
  model.gradientCheckpointing = true;
  const T = options.tokens;
  const inputIds = Int32Array.from({ length: T }, (_, i) => (i * 7919) % config.vocabSize);
  const batch = makeBatch([{ inputIds, lossMask: new Uint8Array(T).fill(1) }], 0);
  const rssBeforeStepBytes = process.memoryUsage().rss;
  const liveBefore = backend.memory().liveBytes;
  backend.resetPeak();
  const started = performance.now();
  const step = () => {
    const loss = tidy(() => div(batchLossSum(model, batch, options.lossChunk), batch.tokens));
    backward(loss);
    return loss;
  };
  const loss = mode === 'logits' ? withHooks(model, [[hookName.logits(), (value) => value]], step) : step();
  const value = await loss.item();
  const seconds = (performance.now() - started) / 1000;
  return {
    mode, loss: value, seconds, peakRssBytes: process.resourceUsage().maxRSS * 1024, rssBeforeStepBytes,
    backendStepPeakBytes: backend.memory().peakBytes - liveBefore,
  };
}

if (options.mode) {
  console.log(JSON.stringify(await runStep(options.mode)));
} else {
  const runs: StepResult[] = [];
  for (const mode of ['logits', 'chunked'] as const) {
    const args = ['--import', 'tsx', new URL(import.meta.url).pathname, '--mode', mode, '--tokens', String(options.tokens), '--layers', String(options.layers)];
    if (options.lossChunk) args.push('--loss-chunk', String(options.lossChunk));
    const stdout = execFileSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 20 });
    runs.push(JSON.parse(stdout.trim().split('\n').at(-1)!) as StepResult);
    const r = runs.at(-1)!;
    console.log(`${mode}: loss ${r.loss.toFixed(6)}, ${r.seconds.toFixed(1)} s, peak RSS ${formatBytes(r.peakRssBytes)} ` +
      `(${formatBytes(r.rssBeforeStepBytes)} before the step), backend step peak ${formatBytes(r.backendStepPeakBytes)}`);
  }
  const dims = dimsFromConfig(config);
  const adapterParameters = model0AdapterParameters();
  const chunk = options.lossChunk ?? defaultLossChunkRows(dims.vocab);
  const chunked = estimateTrainingMemory(dims, 0, adapterParameters, 1, options.tokens, true, { lossChunk: chunk });
  // The estimate before the chunked loss: [T, V] logits, their gradient and a temporary, f32.
  const logitsTerm = 4 * options.tokens * dims.vocab * 3;
  const chunkTerm = 4 * Math.min(options.tokens, chunk) * dims.vocab * 2 + 4 * options.tokens * dims.hidden;
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
      activationsBeforeBytes: chunked.activations - chunkTerm + logitsTerm,
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
