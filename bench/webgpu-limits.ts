// WebGPU at real limits (issue 18, must 4), at the scale: a Qwen2 whose embedding and lm_head are each
// larger than a 256 MiB buffer (V = 151 936, H = 512 in f32: 311 MB) run on the WebGPU backend twice, once with
// the device's own limits and once capped as a browser grants them unless asked (128 MiB bindings, 256 MiB
// buffers: storages then live in segments, kernels bind windows of them). Records the logits' and a training
// step's (chunked loss, rank-1 adapters' gradients) differences between the two runs, each run's time, its
// peak of allocated bytes and how many bindings went through bounce buffers, in bench/results/.
//
//   XDG_RUNTIME_DIR=/tmp/rank1-xdg-runtime EGL_PLATFORM=surfaceless nice -n 10 npx tsx bench/webgpu-limits.ts \
//     [--vocab 151936] [--hidden 512] [--intermediate 1024] [--layers 2] [--head-dim 64] [--kv-heads 2] \
//     [--dtype f32|bf16] [--tokens 16] [--binding-mib 128] [--buffer-mib 256] [--tied]
// Qwen2.5-32B's own embedding: --vocab 152064 --hidden 5120 --head-dim 128 --kv-heads 8 --dtype bf16 --tied
// --layers 1 --intermediate 1024 --tokens 8 (1.56 GB of bf16 weights; fewer than 16 tokens keep the CPU
// adapter's matmul from transposing the head).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { probeWebGpu, type WebGpuBackend } from '../src/kernels/webgpu/index.ts';
import type { WebGpuStorage } from '../src/kernels/webgpu/runtime.ts';
import { fastRandomBf16Qwen2Model, randomQwen2Model, randomRankOneAdapters, tinyQwen2Config } from '../src/model/random-model.ts';
import type { Qwen2Config } from '../src/model/config.ts';
import { backward, noGrad } from '../src/tensor/autograd.ts';
import { linearCrossEntropy } from '../src/tensor/linear-cross-entropy.ts';
import { tensor } from '../src/tensor/ops.ts';
import { Random } from '../src/tensor/random.ts';
import { repoRoot } from './environment.ts';

const MiB = 2 ** 20;

interface RunResult {
  limits: { maxBindingBytes: number; maxBufferBytes: number };
  embeddingSegments: number;
  forwardSeconds: number;
  stepSeconds: number;
  peakBytes: number;
  bouncedBindings: number;
  logits: Float32Array;
  loss: number;
  grads: Float32Array[];
}

function ints(n: number, seed: number, high: number): Int32Array {
  const rng = new Random(seed);
  return Int32Array.from({ length: n }, () => rng.int(high));
}

async function run(config: Qwen2Config, dtype: 'f32' | 'bf16', tokens: number, backend: WebGpuBackend): Promise<RunResult> {
  const rt = backend.runtime;
  const model = dtype === 'bf16' ? fastRandomBf16Qwen2Model(config, backend) : randomQwen2Model(config, 7, backend, 'f32', 0.05);
  const adapters = randomRankOneAdapters(model.dims, 11, backend);
  model.adapters = adapters; // model.dispose() disposes them
  const ids = tensor(ints(tokens, 3, config.vocabSize), [1, tokens], { backend, dtype: 'i32' });
  const targets = tensor(ints(tokens, 4, config.vocabSize), [1, tokens], { backend, dtype: 'i32' });
  try {
    await backend.sync();
    backend.resetPeak();
    const bouncedBefore = rt.bouncedBindings;
    let start = performance.now();
    const logitsTensor = noGrad(() => model.forward(ids));
    const logits = await logitsTensor.toFloat32Array();
    logitsTensor.dispose();
    const forwardSeconds = (performance.now() - start) / 1000;
    start = performance.now();
    const hidden = model.forward(ids, { hiddenOnly: true });
    const loss = linearCrossEntropy(hidden, model.lmHeadWeight, targets, { chunkRows: 8 });
    backward(loss);
    const value = await loss.item();
    const params = adapters.parameters();
    const grads = await Promise.all(params.map((t) => t.grad!.toFloat32Array()));
    const stepSeconds = (performance.now() - start) / 1000;
    for (const t of params) t.grad?.dispose();
    loss.dispose();
    hidden.dispose();
    const embedding = model.weights.embedTokens.storage as WebGpuStorage;
    return {
      limits: { maxBindingBytes: rt.maxBindingBytes, maxBufferBytes: rt.maxBufferBytes },
      embeddingSegments: embedding.segments.length,
      forwardSeconds, stepSeconds,
      peakBytes: backend.memory().peakBytes,
      bouncedBindings: rt.bouncedBindings - bouncedBefore,
      logits, loss: value, grads,
    };
  } finally {
    ids.dispose();
    targets.dispose();
    model.dispose();
  }
}

/** Largest |a - b| and the largest |b| (the scale it is relative to). */
function maxDiff(a: Float32Array, b: Float32Array): { maxAbsDiff: number; maxAbs: number } {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let maxAbsDiff = 0;
  let maxAbs = 0;
  for (let i = 0; i < a.length; i++) {
    maxAbsDiff = Math.max(maxAbsDiff, Math.abs(a[i]! - b[i]!));
    maxAbs = Math.max(maxAbs, Math.abs(b[i]!));
  }
  return { maxAbsDiff, maxAbs };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      vocab: { type: 'string', default: '151936' },
      hidden: { type: 'string', default: '512' },
      intermediate: { type: 'string' },
      layers: { type: 'string', default: '2' },
      'head-dim': { type: 'string', default: '64' },
      'kv-heads': { type: 'string', default: '2' },
      dtype: { type: 'string', default: 'f32' },
      tokens: { type: 'string', default: '16' },
      'binding-mib': { type: 'string', default: '128' },
      'buffer-mib': { type: 'string', default: '256' },
      tied: { type: 'boolean', default: false },
    },
  });
  const hidden = Number(values.hidden);
  const headDim = Number(values['head-dim']);
  const dtype = values.dtype;
  if (dtype !== 'f32' && dtype !== 'bf16') throw new Error(`--dtype must be f32 or bf16, got ${dtype}`);
  if (hidden % headDim !== 0) throw new Error(`--hidden ${hidden} is not a multiple of --head-dim ${headDim}`);
  const config = tinyQwen2Config({
    vocabSize: Number(values.vocab), hiddenSize: hidden, intermediateSize: Number(values.intermediate ?? 2 * hidden),
    numHiddenLayers: Number(values.layers), numAttentionHeads: hidden / headDim, numKeyValueHeads: Number(values['kv-heads']),
    headDim, tieWordEmbeddings: values.tied, torchDtype: dtype === 'bf16' ? 'bfloat16' : 'float32',
  });
  const tokens = Number(values.tokens);
  const caps = { maxBindingBytes: Number(values['binding-mib']) * MiB, maxBufferBytes: Number(values['buffer-mib']) * MiB };

  const results: Record<string, Omit<RunResult, 'logits' | 'grads'>> = {};
  const outputs: Record<string, RunResult> = {};
  for (const [name, options] of [['device limits', {}], ['capped', caps]] as const) {
    const probe = await probeWebGpu(options);
    if (!('backend' in probe)) throw new Error(probe.reason);
    const backend = probe.backend;
    try {
      const result = await run(config, dtype, tokens, backend);
      outputs[name] = result;
      const { logits: _l, grads: _g, ...summary } = result;
      results[name] = summary;
      console.error(`${name}: ${JSON.stringify(summary)}`);
    } finally {
      backend.destroy();
    }
  }
  const device = outputs['device limits']!;
  const capped = outputs['capped']!;
  const comparison = {
    logits: maxDiff(capped.logits, device.logits),
    loss: { capped: capped.loss, device: device.loss, absDiff: Math.abs(capped.loss - device.loss) },
    gradients: maxDiff(Float32Array.from(capped.grads.flatMap((g) => [...g])), Float32Array.from(device.grads.flatMap((g) => [...g]))),
  };
  const embeddingBytes = config.vocabSize * hidden * (dtype === 'bf16' ? 2 : 4);
  const record = {
    date: new Date().toISOString(),
    what: 'issue 18 must 4: a Qwen2 whose embedding and lm_head exceed the buffer and binding caps, capped vs device limits',
    config: {
      vocab: config.vocabSize, hidden, intermediate: config.intermediateSize, layers: config.numHiddenLayers,
      heads: config.numAttentionHeads, kvHeads: config.numKeyValueHeads, headDim, tied: config.tieWordEmbeddings, dtype, tokens,
    },
    embeddingBytes,
    caps,
    // The machine is shared: times are noisy (load averages at the end, 1/5/15 min).
    loadAverage: os.loadavg(),
    runs: results,
    comparison,
  };
  const file = path.join(repoRoot, 'bench', 'results', `${record.date.slice(0, 10)}-webgpu-limits-${dtype}-h${hidden}${values.tied ? '-tied' : ''}.json`);
  fs.writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`);
  console.error(`written to ${path.relative(repoRoot, file)}`);
  console.log(JSON.stringify(record));
}

await main();
