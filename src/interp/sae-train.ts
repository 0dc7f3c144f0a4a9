// Training the BatchTopK SAE (sae.ts) on activations streamed from an activation store or from a user's
// safetensors file with a 2-D `activations` tensor [N, d]. Tokens are split once, by a hash of their index,
// into training (95%) and held-out (5%, for the FVU); training tokens pass through a seeded shuffle buffer of
// fixed size, so memory does not grow with the data set. Checkpoints hold the SAE, Adam's moments and the
// bookkeeping; a resume replays the data stream (reading, not training) up to the step it stopped at, so it
// continues exactly as an uninterrupted run.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Backend } from '../kernels/backend.ts';
import { widenToF32 } from '../kernels/dtype.ts';
import { square, sub, sum, tensor } from '../tensor/ops.ts';
import { keep, tidy } from '../tensor/tensor.ts';
import { Random } from '../tensor/random.ts';
import { readSafetensorsHeader, readTensorData, writeSafetensors, type SafetensorsEntry } from '../model/safetensors.ts';
import { AdamW } from '../train/adamw.ts';
import { readOptimizer, readTrainerState, resolveCheckpoint, saveCheckpoint, type TrainerState } from '../train/train-state.ts';
import { writeJsonAtomic } from '../io/atomic.ts';
import { appendJsonl } from '../io/jsonl.ts';
import { renderSvg } from '../train/plot.ts';
import { ActivationStore } from './activation-store.ts';
import { BatchTopKSae, type SaeConfig, type SaeInference, type SaeStepStats } from './sae.ts';

// ---- data -------------------------------------------------------------------------------------------

/** Where activations come from: `d` columns named `columns`, `tokens` rows, read in order in chunks. */
export interface ActivationSource {
  what: string;
  d: number;
  columns: string[];
  tokens: number;
  /** Rows in order, as [n, d] chunks. */
  chunks(): AsyncGenerator<Float32Array>;
}

export function storeSource(store: ActivationStore): ActivationSource {
  return {
    what: store.dir,
    d: store.index.hooks.length,
    columns: [...store.index.hooks],
    tokens: store.index.tokens,
    async *chunks() {
      for (let s = 0; s < store.shardCount; s++) yield (await store.readShard(s)).acts;
    },
  };
}

/** A safetensors file with `activations` [N, d] (F32, F16 or BF16), read 64k rows at a time. */
export async function safetensorsSource(file: string): Promise<ActivationSource> {
  const header = await readSafetensorsHeader(file);
  const entry = header.tensors.get('activations');
  if (!entry) throw new Error(`${file}: no tensor named "activations" (found ${[...header.tensors.keys()].slice(0, 5).join(', ') || 'none'}); rank1 sae train --input needs activations [N, d]`);
  if (entry.shape.length !== 2) throw new Error(`${file}: "activations" must be 2-D [N, d], got [${entry.shape.join(', ')}]`);
  if (entry.dtype !== 'F32' && entry.dtype !== 'F16' && entry.dtype !== 'BF16') throw new Error(`${file}: "activations" is ${entry.dtype}; F32, F16 or BF16 expected`);
  const [N, d] = entry.shape as [number, number];
  if (N === 0 || d === 0) throw new Error(`${file}: "activations" is empty ([${N}, ${d}])`);
  const width = entry.dtype === 'F32' ? 4 : 2;
  const columns = header.metadata['columns'] ? JSON.parse(header.metadata['columns']) as string[] : Array.from({ length: d }, (_, j) => `column ${j}`);
  return {
    what: file, d, columns, tokens: N,
    async *chunks() {
      const handle = await fs.open(file, 'r');
      try {
        const rowsPerChunk = 1 << 16;
        for (let start = 0; start < N; start += rowsPerChunk) {
          const rows = Math.min(rowsPerChunk, N - start);
          const part: SafetensorsEntry = { ...entry, shape: [rows, d], numel: rows * d, fileOffset: entry.fileOffset + start * d * width, byteLength: rows * d * width };
          const data = await readTensorData(handle, part);
          yield entry.dtype === 'F32' ? data as Float32Array : widenToF32(data as Uint16Array, entry.dtype === 'F16' ? 'f16' : 'bf16');
        }
      } finally {
        await handle.close();
      }
    },
  };
}

/** Token t is held out (5%) when a hash of t lands in the last twentieth. */
export function isHeldOut(token: number): boolean {
  let h = Math.imul(token ^ 0x9e3779b9, 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return ((h ^ (h >>> 16)) >>> 0) % 20 === 0;
}

/**
 * Training batches [batch, d] for `epochs` passes: held-out tokens skipped, the rest through a shuffle buffer
 * of `bufferRows` rows (each emitted row is a uniformly random one of the buffer). The last partial batch of a
 * pass is dropped. Deterministic for a seed.
 */
export async function* shuffledBatches(source: ActivationSource, batch: number, epochs: number, seed: number, bufferRows: number): AsyncGenerator<Float32Array> {
  const d = source.d;
  const rng = new Random(seed);
  const capacity = Math.max(bufferRows, batch);
  const buffer = new Float32Array(capacity * d);
  for (let epoch = 0; epoch < epochs; epoch++) {
    let filled = 0;
    let out = new Float32Array(batch * d);
    let outRows = 0;
    const emitOne = function* (): Generator<Float32Array> {
      const pick = rng.int(filled);
      out.set(buffer.subarray(pick * d, (pick + 1) * d), outRows * d);
      buffer.copyWithin(pick * d, (filled - 1) * d, filled * d);
      filled--;
      if (++outRows === batch) {
        yield out;
        out = new Float32Array(batch * d);
        outRows = 0;
      }
    };
    let token = 0;
    for await (const chunk of source.chunks()) {
      const rows = chunk.length / d;
      for (let r = 0; r < rows; r++, token++) {
        if (isHeldOut(token)) continue;
        if (filled === capacity) yield* emitOne();
        buffer.set(chunk.subarray(r * d, (r + 1) * d), filled * d);
        filled++;
      }
    }
    while (filled > 0) yield* emitOne();
  }
}

/** The held-out tokens, [n, d] (5% of the data; read once for the FVU). */
export async function heldOutRows(source: ActivationSource, limit = 1 << 18): Promise<Float32Array> {
  const d = source.d;
  const parts: Float32Array[] = [];
  let count = 0;
  let token = 0;
  for await (const chunk of source.chunks()) {
    const rows = chunk.length / d;
    for (let r = 0; r < rows; r++, token++) {
      if (!isHeldOut(token) || count >= limit) continue;
      parts.push(chunk.slice(r * d, (r + 1) * d));
      count++;
    }
  }
  const out = new Float32Array(count * d);
  parts.forEach((p, i) => out.set(p, i * d));
  return out;
}

export function trainingTokenCount(tokens: number): number {
  let held = 0;
  for (let t = 0; t < tokens; t++) if (isHeldOut(t)) held++;
  return tokens - held;
}

// ---- evaluation -------------------------------------------------------------------------------------

export interface SaeEvaluation {
  /** Fraction of variance unexplained: Σ‖x − x̂‖² / Σ‖x − x̄‖² over the held-out tokens. */
  fvu: number;
  /** Mean non-zero latents per token. */
  l0: number;
  tokens: number;
}

export async function evaluateSae(sae: BatchTopKSae, rows: Float32Array, inference: SaeInference, batch = 2048): Promise<SaeEvaluation> {
  const d = sae.config.d;
  const n = rows.length / d;
  if (n === 0) return { fvu: NaN, l0: NaN, tokens: 0 };
  const meanRow = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) meanRow[j]! += rows[i * d + j]! / n;
  let errorSum = 0;
  let varianceSum = 0;
  let active = 0;
  for (let i = 0; i < n * d; i++) varianceSum += (rows[i]! - meanRow[i % d]!) ** 2;
  for (let start = 0; start < n; start += batch) {
    const count = Math.min(batch, n - start);
    const x = tensor(rows.subarray(start * d, (start + count) * d), [count, d], { backend: sae.backend });
    const [err, nonZero] = await (async () => {
      const out = tidy(() => {
        const latents = sae.encode(x, inference);
        const error = sum(square(sub(x, sae.decode(latents))));
        return { error: keep(error), latents: keep(latents) };
      });
      const e = (await out.error.toFloat32Array())[0]!;
      const l = await out.latents.toFloat32Array();
      out.error.dispose();
      out.latents.dispose();
      let nz = 0;
      for (const v of l) if (v !== 0) nz++;
      return [e, nz];
    })();
    x.dispose();
    errorSum += err;
    active += nonZero;
  }
  return { fvu: errorSum / Math.max(varianceSum, 1e-30), l0: active / n, tokens: n };
}

// ---- files ------------------------------------------------------------------------------------------

export const SAE_WEIGHTS_FILE = 'sae.safetensors';
export const SAE_CONFIG_FILE = 'config.json';

/** How an SAE is trained and used, beyond its architecture (SaeConfig). */
export interface SaeHyperParameters {
  expansion: number;
  batch: number;
  lr: number;
  warmupSteps: number;
  epochs: number;
  seed: number;
  inference: SaeInference;
}

export interface SaeFileConfig extends SaeConfig, SaeHyperParameters {
  format: 'rank1-sae';
  version: 1;
  /** What each input column is (adapter hook names, or the --input file's columns). */
  columns: string[];
  source: string;
}

export async function writeSaeFolder(dir: string, sae: BatchTopKSae, config: SaeFileConfig): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  await writeSafetensors(path.join(dir, SAE_WEIGHTS_FILE), [
    { name: 'W_enc', dtype: 'F32', shape: [...sae.wEnc.shape], data: () => sae.wEnc.toFloat32Array() },
    { name: 'b_enc', dtype: 'F32', shape: [...sae.bEnc.shape], data: () => sae.bEnc.toFloat32Array() },
    { name: 'W_dec', dtype: 'F32', shape: [...sae.wDec.shape], data: () => sae.wDec.toFloat32Array() },
    { name: 'b_dec', dtype: 'F32', shape: [...sae.bDec.shape], data: () => sae.bDec.toFloat32Array() },
    { name: 'threshold', dtype: 'F32', shape: [], data: Float32Array.of(sae.threshold) },
    { name: 'tokens_since_fired', dtype: 'F32', shape: [sae.config.latents], data: Float32Array.from(sae.tokensSinceFired) },
  ], { format: 'rank1-sae' });
  await writeJsonAtomic(path.join(dir, SAE_CONFIG_FILE), config);
}

export async function readSaeFolder(dir: string, backend: Backend): Promise<{ sae: BatchTopKSae; config: SaeFileConfig }> {
  const configFile = path.join(dir, SAE_CONFIG_FILE);
  let config: SaeFileConfig;
  try {
    config = JSON.parse(await fs.readFile(configFile, 'utf8')) as SaeFileConfig;
  } catch (error) {
    throw new Error(`${configFile}: cannot be read (is ${dir} an SAE folder written by rank1 sae train?): ${(error as Error).message}`);
  }
  if (config.format !== 'rank1-sae') throw new Error(`${configFile}: "format" is ${JSON.stringify(config.format)}, expected "rank1-sae"`);
  const file = path.join(dir, SAE_WEIGHTS_FILE);
  const header = await readSafetensorsHeader(file);
  const read = async (name: string, shape: number[]) => {
    const entry = header.tensors.get(name);
    if (!entry || entry.dtype !== 'F32' || entry.shape.join() !== shape.join()) throw new Error(`${file}: "${name}" is missing or not F32 [${shape.join(', ')}]`);
    return await readTensorData(file, entry) as Float32Array;
  };
  const { d, latents: F } = config;
  const sae = new BatchTopKSae(config, backend, config.seed, {
    wEnc: await read('W_enc', [d, F]), bEnc: await read('b_enc', [F]), wDec: await read('W_dec', [F, d]), bDec: await read('b_dec', [d]),
  });
  sae.threshold = (await read('threshold', []))[0]!;
  sae.tokensSinceFired.set(await read('tokens_since_fired', [F]));
  return { sae, config };
}

// ---- training ---------------------------------------------------------------------------------------

export interface SaeTrainOptions extends SaeHyperParameters {
  source: ActivationSource;
  out: string;
  backend: Backend;
  config: SaeConfig;
  bufferRows?: number;
  saveEvery?: number;
  keepCheckpoints?: number;
  resume?: string;
  /** Stop after this many steps in total (for tests). */
  maxSteps?: number;
  onStep?: (step: number, totalSteps: number, stats: SaeStepStats & { lr: number }) => void;
  shouldStop?: () => boolean;
}

export interface SaeMetrics {
  fvu: number;
  l0: number;
  dead: number;
  live: number;
  steps: number;
  heldOutTokens: number;
  trainTokens: number;
  seconds: number;
}

/** Trains (or resumes) and writes the SAE folder: sae.safetensors, config.json, metrics.json(l), curve. */
export async function trainSae(options: SaeTrainOptions): Promise<SaeMetrics | null> {
  const { source, out, backend, config, batch, lr, warmupSteps, epochs, seed } = options;
  if (source.d !== config.d) throw new Error(`SAE: the data has ${source.d} columns but the SAE takes d = ${config.d}`);
  const trainTokens = trainingTokenCount(source.tokens);
  const totalSteps = Math.min(options.maxSteps ?? Infinity, epochs * Math.floor(trainTokens / batch));
  if (trainTokens < batch) throw new Error(`SAE: ${trainTokens} training tokens in ${source.what} are fewer than one batch of ${batch}; lower --batch`);
  // Short runs track the inference threshold from a tenth of the way in (dictionary_learning: step 1000).
  const effective: SaeConfig = { ...config, thresholdStartStep: Math.min(config.thresholdStartStep, Math.max(1, Math.floor(totalSteps / 10))) };
  const sae = new BatchTopKSae(effective, backend, seed);
  const optimizer = new AdamW(sae.parameters(), { lr, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 });
  const settings = { d: config.d, latents: config.latents, k: config.k, variant: config.variant, batch, lr, warmupSteps, epochs, seed, source: source.what, tokens: source.tokens };
  await fs.mkdir(out, { recursive: true });
  const metricsFile = path.join(out, 'metrics.jsonl');
  let startStep = 0;
  let seconds = 0;
  if (options.resume) {
    const checkpoint = await resolveCheckpoint(options.resume);
    const state = await readTrainerState(checkpoint);
    for (const [key, value] of Object.entries(settings)) {
      if (JSON.stringify(state.settings[key]) !== JSON.stringify(value)) throw new Error(`--resume ${checkpoint}: it was trained with ${key} ${JSON.stringify(state.settings[key])}, this run has ${JSON.stringify(value)}`);
    }
    const { sae: saved } = await readSaeFolder(checkpoint, backend);
    for (const [target, from] of [[sae.wEnc, saved.wEnc], [sae.bEnc, saved.bEnc], [sae.wDec, saved.wDec], [sae.bDec, saved.bDec]] as const) backend.assign(target, from);
    const bookkeeping = state.dataOrder as { threshold?: number; tokensSinceFired?: number[] };
    sae.threshold = bookkeeping.threshold ?? saved.threshold;
    sae.tokensSinceFired.set(bookkeeping.tokensSinceFired ?? saved.tokensSinceFired);
    saved.dispose();
    await readOptimizer(path.join(checkpoint, 'optimizer.safetensors'), optimizer);
    startStep = state.step;
    sae.steps = startStep;
    seconds = state.seconds;
    sae.biasInitialized = true;
    // Keep exactly the metrics lines of the steps done.
    const lines = (await fs.readFile(metricsFile, 'utf8').catch(() => '')).split('\n').filter((l) => l.trim() !== '').slice(0, startStep);
    await fs.writeFile(metricsFile, lines.map((l) => `${l}\n`).join(''));
  } else {
    await fs.writeFile(metricsFile, '');
  }
  const fileConfig = (): SaeFileConfig => ({
    format: 'rank1-sae', version: 1, ...effective, columns: source.columns, source: source.what, expansion: options.expansion,
    batch, lr, warmupSteps, epochs, seed, inference: options.inference,
  });
  const saveEvery = options.saveEvery ?? 500;
  const save = async (step: number) => {
    // The bookkeeping in full precision (the weights file rounds the threshold and counts to f32).
    const bookkeeping = { replay: true, threshold: sae.threshold, tokensSinceFired: Array.from(sae.tokensSinceFired) };
    const state: TrainerState = { version: 1, step, totalSteps, dataOrder: bookkeeping, settings, seconds, tokensSeen: step * batch };
    await saveCheckpoint({ outDir: out, state, optimizer, keep: options.keepCheckpoints ?? 2, writeWeights: (dir) => writeSaeFolder(dir, sae, fileConfig()) });
  };
  let step = 0;
  let stopped = false;
  const started = Date.now();
  for await (const x of shuffledBatches(source, batch, epochs, seed, options.bufferRows ?? 1 << 16)) {
    if (step >= totalSteps) break;
    step++;
    if (step <= startStep) continue; // replaying the data stream up to the resumed step
    const stepLr = warmupSteps > 0 ? lr * Math.min(1, step / warmupSteps) : lr;
    const stats = await sae.trainStep(x, batch, optimizer, stepLr);
    if (!Number.isFinite(stats.loss)) throw new Error(`SAE training: the loss is ${stats.loss} at step ${step}; lower --lr`);
    await appendJsonl(metricsFile, { step, loss: stats.loss, mse: stats.mse, aux: stats.aux, l0: stats.l0, dead: stats.dead, lr: stepLr });
    options.onStep?.(step, totalSteps, { ...stats, lr: stepLr });
    if (step % saveEvery === 0 && step < totalSteps) await save(step);
    if (options.shouldStop?.()) {
      stopped = true;
      break;
    }
  }
  seconds += (Date.now() - started) / 1000;
  if (stopped) {
    await save(step);
    sae.dispose();
    optimizer.dispose();
    return null;
  }
  const heldOut = await heldOutRows(source);
  const inference = options.inference === 'threshold' && sae.threshold < 0 ? 'batch' : options.inference;
  const evaluation = await evaluateSae(sae, heldOut, inference);
  const metrics: SaeMetrics = {
    fvu: evaluation.fvu, l0: evaluation.l0, dead: sae.deadCount, live: effective.latents - sae.deadCount, steps: step,
    heldOutTokens: evaluation.tokens, trainTokens, seconds,
  };
  await writeSaeFolder(out, sae, { ...fileConfig(), inference });
  await writeJsonAtomic(path.join(out, 'metrics.json'), metrics);
  const curve = (await fs.readFile(metricsFile, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as { step: number; mse: number });
  await fs.writeFile(path.join(out, 'loss-curve.svg'), await renderSvg({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `BatchTopK SAE: held-out FVU ${metrics.fvu.toFixed(3)}, L0 ${metrics.l0.toFixed(1)}`,
    width: 640, height: 320,
    data: { values: curve.map((p) => ({ step: p.step, mse: p.mse })) },
    mark: { type: 'line' },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'step' },
      y: { field: 'mse', type: 'quantitative', title: 'reconstruction error (mean ‖x − x̂‖² per token)', scale: { type: 'log' } },
    },
  }));
  sae.dispose();
  optimizer.dispose();
  return metrics;
}


// ---- SAELens export ---------------------------------------------------------------------------------

/**
 * The SAE as a SAELens folder (`cfg.json` + `sae_weights.safetensors`), loadable with `SAE.load_from_disk`: a
 * JumpReLU SAE with one threshold per latent, θ / ‖W_dec[f]‖ (rank1 thresholds pre · ‖W_dec[f]‖ against θ).
 * Only the standard variant with a learned threshold has this per-token form.
 */
export async function exportSaeLens(saeDir: string, out: string, backend: Backend): Promise<void> {
  const { sae, config } = await readSaeFolder(saeDir, backend);
  try {
    if (config.variant !== 'standard') throw new Error(`${saeDir}: the paper variant selects by batch top-k at inference, which SAELens cannot express; export a --variant standard SAE`);
    if (!(sae.threshold > 0)) throw new Error(`${saeDir}: no inference threshold was learned (train longer), so there is no JumpReLU form to export`);
    const norms = await sae.decoderNorms().toFloat32Array();
    const threshold = Float32Array.from(norms, (n) => sae.threshold / Math.max(n, 1e-12));
    await fs.mkdir(out, { recursive: true });
    await writeSafetensors(path.join(out, 'sae_weights.safetensors'), [
      { name: 'W_enc', dtype: 'F32', shape: [config.d, config.latents], data: await sae.wEnc.toFloat32Array() },
      { name: 'W_dec', dtype: 'F32', shape: [config.latents, config.d], data: await sae.wDec.toFloat32Array() },
      { name: 'b_enc', dtype: 'F32', shape: [config.latents], data: await sae.bEnc.toFloat32Array() },
      { name: 'b_dec', dtype: 'F32', shape: [config.d], data: await sae.bDec.toFloat32Array() },
      { name: 'threshold', dtype: 'F32', shape: [config.latents], data: threshold },
    ]);
    await writeJsonAtomic(path.join(out, 'cfg.json'), {
      architecture: 'jumprelu', d_in: config.d, d_sae: config.latents, dtype: 'float32', device: 'cpu',
      apply_b_dec_to_input: true, normalize_activations: 'none', reshape_activations: 'none',
      metadata: {
        hook_name: 'rank1.adapters', hook_layer: 0, hook_head_index: null, model_name: config.source, context_size: null,
        rank1_columns: config.columns, rank1_k: config.k, rank1_source: config.source,
      },
    });
  } finally {
    sae.dispose();
  }
}
