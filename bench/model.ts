// `npm run bench:model`: a whole Qwen2.5-0.5B-shaped model (random bf16 weights made on the fly, never
// written or downloaded) on each backend: prefill and decode tokens/s, one rank-1-adapter training step's
// tokens/s, and peak memory; plus the same training step in PyTorch where python3-torch is installed
// (bench/peers/torch_train_step.py), for the ratio the project targets (rank1 cpu ≥ 0.3× PyTorch); and the
// decode's distance from its memory-bound limit: a decode step reads every weight once, so it can go no
// faster than weight bytes ÷ the machine's memory bandwidth, measured in the same run by PyTorch streaming
// a 1 GiB tensor (bench/peers/torch_bandwidth.py). Target: decode ≥ 0.9 of that limit on the CPU. PyTorch's
// own decode of the same shape (bf16 weights, bench/peers/torch_decode.py), timed in the same run, is printed
// beside rank1's: its ms/token, its fraction of the same limit, and rank1's speed as a multiple of it.
// This VM's bandwidth swings between about 38 and 79 GB/s within minutes, so the CPU decode is also run token
// by token between passes of WebAssembly's own two-thread stream (bench/wasm-stream.ts): the rate the decode
// reads its weights at, as a fraction of what WebAssembly's loads fetch at the same moments.
//
//   npm run bench:model                          # cpu (and webgpu if an adapter answers), 0.5B shape
//   npm run bench:model -- --prefill 128 --decode 16 --train-block 2048 --backend cpu
//   npm run bench:model -- --layers 4            # fewer layers: a quick look
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { Bench } from 'tinybench';
import { BYTES_PER_ELEMENT, type Backend } from '../src/kernels/backend.ts';
import type { Tensor } from '../src/tensor/tensor.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { probeWebGpu } from '../src/kernels/webgpu/index.ts';
import { tensor } from '../src/tensor/ops.ts';
import { tidy } from '../src/tensor/tensor.ts';
import { noGrad } from '../src/tensor/autograd.ts';
import { torchBandwidth, torchDecode, torchPeer } from './peers/torch.ts';
import type { Qwen2Config } from '../src/model/config.ts';
import { KVCache, type Qwen2Model } from '../src/model/qwen2.ts';
import { QWEN25_05B, fastRandomBf16Qwen2Model } from '../src/model/random-model.ts';
import { PAPER_TRAINING, train } from '../src/train/trainer.ts';
import type { TokenizedExample } from '../src/train/data-rows.ts';
import { formatBytes } from '../src/train/memory.ts';
import { repoRoot } from './environment.ts';
import { WasmStream } from './wasm-stream.ts';

interface Options {
  backend: 'all' | 'cpu' | 'webgpu';
  layers: number;
  prefill: number;
  decode: number;
  trainBlock: number;
  iterations: number;
  peer: boolean;
  streamProbe: boolean;
}

const program = new Command()
  .option('--backend <name>', 'all, cpu or webgpu', 'all')
  .option('--layers <n>', 'layers (24 for Qwen2.5-0.5B)', Number, QWEN25_05B.numHiddenLayers)
  .option('--prefill <n>', 'prompt tokens for prefill', Number, 128)
  .option('--decode <n>', 'tokens decoded one by one with the KV cache', Number, 16)
  .option('--train-block <n>', 'tokens in the training step (0: skip training)', Number, 2048)
  .option('--iterations <n>', 'samples per case', Number, 2)
  .option('--no-peer', 'skip the PyTorch peers (training step, memory bandwidth, decode)')
  .option('--no-stream-probe', 'skip the CPU decode between passes of WebAssembly\'s own memory stream');
program.parse();
const options = program.opts<Options>();

async function sample(name: string, iterations: number, fn: () => Promise<void>): Promise<number> {
  const bench = new Bench({ time: 0, iterations, warmup: false, throws: true });
  bench.add(name, fn);
  const [task] = await bench.run();
  if (task!.result.state !== 'completed') throw new Error(`${name}: ${task!.result.state}`);
  return task!.result.latency.mean;
}

interface BackendResult {
  backend: string;
  description: string;
  prefill?: { tokens: number; ms: number; tokensPerSecond: number; peakBytes: number };
  decode?: { tokens: number; msPerToken: number; tokensPerSecond: number; peakBytes: number; weightBytesPerToken: number };
  decodeBesideStream?: DecodeBesideStream;
  train?: { tokens: number; ms: number; tokensPerSecond: number; peakBytes: number };
  skipped?: string;
}

function maxRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

async function benchBackend(backend: Backend, config: Qwen2Config): Promise<BackendResult> {
  const result: BackendResult = { backend: backend.name, description: backend.description };
  const model = fastRandomBf16Qwen2Model(config, backend);
  const vocab = config.vocabSize;
  const ids = (n: number) => tensor(Int32Array.from({ length: n }, (_, i) => (i * 7919) % vocab), [1, n], { backend, dtype: 'i32' });
  try {
    const prompt = ids(options.prefill);
    backend.resetPeak();
    const prefillMs = await sample('prefill', options.iterations, () => forwardAndRead(model, () => prompt));
    result.prefill = { tokens: options.prefill, ms: prefillMs, tokensPerSecond: options.prefill / (prefillMs / 1000), peakBytes: backend.memory().peakBytes };
    console.log(`  ${backend.name} prefill ${options.prefill} tokens: ${prefillMs.toFixed(0)} ms, ${result.prefill.tokensPerSecond.toFixed(1)} tok/s, peak ${formatBytes(result.prefill.peakBytes)}`);

    backend.resetPeak();
    const decodeMs = await sample('decode', options.iterations, async () => {
      const cache = new KVCache(model.dims, 1, backend, options.prefill + options.decode);
      await forwardAndRead(model, () => prompt, cache);
      const started = performance.now();
      for (let i = 0; i < options.decode; i++) await forwardAndRead(model, () => ids(1), cache);
      decodeSeconds = (performance.now() - started) / 1000;
      cache.dispose();
    });
    void decodeMs;
    result.decode = {
      tokens: options.decode, msPerToken: (decodeSeconds * 1000) / options.decode, tokensPerSecond: options.decode / decodeSeconds,
      peakBytes: backend.memory().peakBytes, weightBytesPerToken: weightBytesPerToken(model),
    };
    console.log(`  ${backend.name} decode: ${result.decode.msPerToken.toFixed(1)} ms/token, ${result.decode.tokensPerSecond.toFixed(2)} tok/s (after a ${options.prefill}-token prompt)`);
    if (backend.name === 'cpu' && options.streamProbe) {
      const beside = await decodeBesideStream(model, prompt, vocab, result.decode.weightBytesPerToken);
      result.decodeBesideStream = beside;
      console.log(`  cpu decode between passes of WebAssembly's 2-thread stream (${beside.tokens} tokens, medians): weights read at ` +
        `${beside.decodeGbPerSecond.toFixed(1)} GB/s, the stream ${beside.streamGbPerSecond.toFixed(1)} GB/s (range ${beside.streamRangeGbPerSecond.map((x) => x.toFixed(0)).join('–')}): ` +
        `decode at ${beside.fraction.toFixed(2)} of it`);
    }
    prompt.dispose();

    if (options.trainBlock > 0) {
      const block = options.trainBlock;
      const example: TokenizedExample = {
        inputIds: Int32Array.from({ length: block }, (_, i) => (i * 104729) % vocab),
        lossMask: new Uint8Array(block).fill(1),
      };
      const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rank1-bench-train-'));
      backend.resetPeak();
      const started = performance.now();
      await train(model, [example], { ...PAPER_TRAINING, epochs: 1, batchSize: 1, microBatch: 1, saveEvery: 1_000_000, maxSteps: 1 }, { outDir, log: () => {} });
      const ms = performance.now() - started;
      fs.rmSync(outDir, { recursive: true, force: true });
      result.train = { tokens: block, ms, tokensPerSecond: block / (ms / 1000), peakBytes: backend.memory().peakBytes };
      console.log(`  ${backend.name} training step (rank-1 adapters, block ${block}, gradient checkpointing): ${(ms / 1000).toFixed(1)} s, ${result.train.tokensPerSecond.toFixed(1)} tok/s, peak ${formatBytes(result.train.peakBytes)}`);
    }
  } catch (error) {
    result.skipped = (error as Error).message.split('\n')[0];
    console.log(`  ${backend.name}: stopped: ${result.skipped}`);
  } finally {
    model.dispose();
  }
  return result;
}
let decodeSeconds = 0;

/**
 * The last position's logits of the ids [1, t] that `ids` returns (continuing `cache` when given), read back so
 * that the work is done, then freed with every intermediate: ids made inside `ids` too, a tensor it only
 * returns not.
 */
async function forwardAndRead(model: Qwen2Model, ids: () => Tensor, cache?: KVCache): Promise<void> {
  const logits = tidy(() => noGrad(() => model.forward(ids(), { ...(cache ? { cache } : {}), lastPositionOnly: true })));
  await logits.toArray();
  logits.dispose();
}

/** The CPU decode, token by token, each token right after a pass of WebAssembly's own stream. */
interface DecodeBesideStream {
  tokens: number;
  streamBytes: number;
  /** Medians over the tokens: weight bytes ÷ the token's time, and the pass's GB/s before it. */
  decodeGbPerSecond: number;
  streamGbPerSecond: number;
  streamRangeGbPerSecond: [number, number];
  /** Median over the tokens of (the token's weight rate ÷ the pass's rate just before it). */
  fraction: number;
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/**
 * Decodes `options.decode` tokens after `prompt`, each right after one two-thread pass over 256 MiB of
 * WebAssembly memory (bench/wasm-stream.ts). A 5 ms pause before each pass lets the matmul's polling worker
 * fall asleep (it polls 2 ms after a GEMV), so the pass has both cores.
 */
async function decodeBesideStream(model: Qwen2Model, prompt: Tensor, vocab: number, weightBytes: number): Promise<DecodeBesideStream> {
  const stream = new WasmStream(256 * 2 ** 20);
  const cache = new KVCache(model.dims, 1, prompt.backend, options.prefill + options.decode + 1);
  const pause = () => new Promise((resolve) => setTimeout(resolve, 5));
  try {
    await forwardAndRead(model, () => prompt, cache);
    await stream.twoThreads(); // warm-up
    const streamRates: number[] = [];
    const decodeRates: number[] = [];
    for (let i = 0; i < options.decode; i++) {
      await pause();
      streamRates.push(await stream.twoThreads());
      const started = performance.now();
      await forwardAndRead(model, () => tensor(Int32Array.of((i * 7919) % vocab), [1, 1], { backend: prompt.backend, dtype: 'i32' }), cache);
      decodeRates.push(weightBytes / ((performance.now() - started) * 1e6));
    }
    return {
      tokens: options.decode, streamBytes: stream.bytes,
      decodeGbPerSecond: median(decodeRates), streamGbPerSecond: median(streamRates),
      streamRangeGbPerSecond: [Math.min(...streamRates), Math.max(...streamRates)],
      fraction: median(decodeRates.map((rate, i) => rate / streamRates[i]!)),
    };
  } finally {
    cache.dispose();
    await stream.close();
  }
}

/**
 * Bytes of weights one decode step must read: every layer's projections, biases and norms, the final norm
 * and the output head (for tied embeddings, the whole table: the head reads it all); the embedding lookup
 * reads one row, left out.
 */
function weightBytesPerToken(model: Qwen2Model): number {
  const bytes = (t: Tensor | undefined) => (t ? t.size * BYTES_PER_ELEMENT[t.dtype] : 0);
  const { weights } = model;
  let total = bytes(weights.norm) + bytes(model.lmHeadWeight);
  for (const layer of weights.layers) {
    total += bytes(layer.inputLayernorm) + bytes(layer.postAttentionLayernorm);
    for (const lin of [layer.qProj, layer.kProj, layer.vProj, layer.oProj, layer.gateProj, layer.upProj, layer.downProj]) {
      total += bytes(lin.weight) + bytes(lin.bias);
    }
  }
  return total;
}

/** PyTorch's training step on the same shapes (bench/peers/torch_train_step.py), or why it was skipped. */
function torchTrainStep(config: Qwen2Config): { tokensPerSecond: number; seconds: number; torch: string } | { skipped: string } {
  return torchPeer('torch_train_step.py', ['--layers', String(config.numHiddenLayers), '--block', String(options.trainBlock)]);
}

const config: Qwen2Config = { ...QWEN25_05B, numHiddenLayers: options.layers };
console.log(`Qwen2.5-0.5B shape (${config.numHiddenLayers} layers, hidden ${config.hiddenSize}, vocab ${config.vocabSize}), random bf16 weights`);
const results: BackendResult[] = [];
if (options.backend !== 'webgpu') results.push(await benchBackend(getCpuBackend(), config));
if (options.backend !== 'cpu') {
  const probe = await probeWebGpu();
  if ('backend' in probe) results.push(await benchBackend(probe.backend, config));
  else {
    console.log(`  webgpu: skipped: ${probe.reason}`);
    results.push({ backend: 'webgpu', description: 'unavailable', skipped: probe.reason });
  }
}
let bandwidth: ReturnType<typeof torchBandwidth> | undefined;
let decodeLimitMs: number | undefined;
const cpuDecode = results.find((r) => r.backend === 'cpu')?.decode;
if (cpuDecode && options.peer) {
  bandwidth = torchBandwidth();
  if ('skipped' in bandwidth) console.log(`  bandwidth peer: skipped: ${bandwidth.skipped}`);
  else {
    const limitMs = (cpuDecode.weightBytesPerToken / (bandwidth.gbPerSecond * 1e9)) * 1000;
    decodeLimitMs = limitMs;
    const fraction = limitMs / cpuDecode.msPerToken;
    console.log(`  memory bandwidth (pytorch ${bandwidth.torch}, ${bandwidth.threads} threads, 1 GiB sum): ${bandwidth.gbPerSecond.toFixed(1)} GB/s`);
    console.log(`  cpu decode reads ${formatBytes(cpuDecode.weightBytesPerToken)} of weights per token: limit ${limitMs.toFixed(1)} ms/token, ` +
      `decode at ${fraction.toFixed(2)} of it (target ≥ 0.9: ${fraction >= 0.9 ? 'PASS' : `SHORT by ${(0.9 / fraction).toFixed(2)}×`})`);
    Object.assign(bandwidth, { decodeLimitMsPerToken: limitMs, decodeFractionOfLimit: fraction });
  }
}
let peerDecode: ReturnType<typeof torchDecode> | undefined;
if (cpuDecode && options.peer) {
  peerDecode = torchDecode({ layers: config.numHiddenLayers, prompt: options.prefill, decode: options.decode });
  if ('skipped' in peerDecode) console.log(`  pytorch decode peer: skipped: ${peerDecode.skipped}`);
  else {
    const fraction = decodeLimitMs === undefined ? undefined : decodeLimitMs / peerDecode.msPerToken;
    const fractionText = fraction === undefined ? '' : `, at ${fraction.toFixed(2)} of the limit (rank1 cpu ${(decodeLimitMs! / cpuDecode.msPerToken).toFixed(2)})`;
    console.log(`  pytorch ${peerDecode.torch} decode (${peerDecode.dtype} weights, ${peerDecode.threads} threads, reads ${formatBytes(peerDecode.weightBytesPerToken)}/token): ` +
      `${peerDecode.msPerToken.toFixed(1)} ms/token, ${peerDecode.tokensPerSecond.toFixed(2)} tok/s${fractionText}`);
    const speedup = peerDecode.msPerToken / cpuDecode.msPerToken;
    console.log(`  rank1 cpu decode at ${speedup.toFixed(2)}× PyTorch's speed (${cpuDecode.msPerToken.toFixed(1)} vs ${peerDecode.msPerToken.toFixed(1)} ms/token)`);
    Object.assign(peerDecode, { fractionOfLimit: fraction, rank1SpeedMultiple: speedup });
  }
}
let peer: ReturnType<typeof torchTrainStep> | undefined;
if (options.trainBlock > 0 && options.peer) {
  peer = torchTrainStep(config);
  if ('skipped' in peer) console.log(`  pytorch peer: skipped: ${peer.skipped}`);
  else {
    console.log(`  pytorch ${peer.torch} training step (same shapes, f32 compute): ${peer.seconds.toFixed(1)} s, ${peer.tokensPerSecond.toFixed(1)} tok/s`);
    const cpu = results.find((r) => r.backend === 'cpu')?.train;
    if (cpu) {
      const ratio = cpu.tokensPerSecond / peer.tokensPerSecond;
      console.log(`  ratio rank1 cpu / pytorch: ${ratio.toFixed(2)}× (target ≥ 0.3×: ${ratio >= 0.3 ? 'PASS' : `SHORT by ${(0.3 / ratio).toFixed(1)}×`})`);
    }
  }
}
const date = new Date().toISOString().slice(0, 10);
const file = path.join(repoRoot, 'bench/results', `${date}-${os.hostname().split('.')[0]}-model-${options.backend}-block${options.trainBlock}.json`);
fs.writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, cores: os.availableParallelism(), cpu: os.cpus()[0]?.model, config, options, results, peer, bandwidth, peerDecode, maxRssBytes: maxRssBytes() }, null, 2)}\n`);
console.log(`wrote ${path.relative(repoRoot, file)} (process peak RSS ${formatBytes(maxRssBytes())})`);
process.exit(0);
