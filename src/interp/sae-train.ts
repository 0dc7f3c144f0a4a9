// Training the BatchTopK SAE (sae.ts): the loop over shuffled batches (sae-data.ts), checkpoints and resume,
// the held-out evaluation (sae-eval.ts) and the folder it writes (sae-folder.ts): sae.safetensors,
// config.json, metrics.json, metrics.jsonl, loss-curve.svg. Checkpoints hold the SAE, Adam's moments and the
// bookkeeping; a resume replays the data stream (reading, not training) up to the step it stopped at, so it
// continues exactly as an uninterrupted run.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Backend } from '../kernels/backend.ts';
import { AdamW } from '../train/adamw.ts';
import { readOptimizer, readTrainerState, resolveCheckpoint, saveCheckpoint, type TrainerState } from '../train/train-state.ts';
import { writeJsonAtomic } from '../io/atomic.ts';
import { appendJsonl, readJsonl, writeJsonl } from '../io/jsonl.ts';
import { renderSvg } from '../train/plot.ts';
import { BatchTopKSae, type SaeConfig, type SaeStepStats } from './sae.ts';
import { heldOutRows, shuffledBatches, trainingTokenCount, type ActivationSource } from './sae-data.ts';
import { evaluateSae } from './sae-eval.ts';
import { SAE_METRICS_FILE, readSaeFolder, writeSaeFolder, type SaeFileConfig, type SaeHyperParameters } from './sae-folder.ts';

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
  if (options.resume) ({ step: startStep, seconds } = await resumeFrom(options.resume, sae, optimizer, settings, metricsFile));
  else await fs.writeFile(metricsFile, '');
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
  await writeJsonAtomic(path.join(out, SAE_METRICS_FILE), metrics);
  await writeLossCurve(path.join(out, 'loss-curve.svg'), metricsFile, metrics);
  sae.dispose();
  optimizer.dispose();
  return metrics;
}

/**
 * Loads a checkpoint into `sae` and `optimizer` (refusing one trained with other settings) and cuts
 * metrics.jsonl back to the steps it holds; the step and training seconds it stopped at.
 */
async function resumeFrom(resume: string, sae: BatchTopKSae, optimizer: AdamW, settings: Record<string, unknown>, metricsFile: string): Promise<{ step: number; seconds: number }> {
  const checkpoint = await resolveCheckpoint(resume);
  const state = await readTrainerState(checkpoint);
  for (const [key, value] of Object.entries(settings)) {
    if (JSON.stringify(state.settings[key]) !== JSON.stringify(value)) throw new Error(`--resume ${checkpoint}: it was trained with ${key} ${JSON.stringify(state.settings[key])}, this run has ${JSON.stringify(value)}`);
  }
  const { backend } = sae;
  const { sae: saved } = await readSaeFolder(checkpoint, backend);
  for (const [target, from] of [[sae.wEnc, saved.wEnc], [sae.bEnc, saved.bEnc], [sae.wDec, saved.wDec], [sae.bDec, saved.bDec]] as const) backend.assign(target, from);
  const bookkeeping = state.dataOrder as { threshold?: number; tokensSinceFired?: number[] };
  sae.threshold = bookkeeping.threshold ?? saved.threshold;
  sae.tokensSinceFired.set(bookkeeping.tokensSinceFired ?? saved.tokensSinceFired);
  saved.dispose();
  await readOptimizer(path.join(checkpoint, 'optimizer.safetensors'), optimizer);
  sae.steps = state.step;
  sae.biasInitialized = true;
  // Keep exactly the metrics lines of the steps done (a line cut by the kill can only come after them).
  const done: unknown[] = [];
  for await (const { value } of readJsonl(metricsFile, { missingOk: true, skipBadLines: true })) {
    if (done.length === state.step) break;
    done.push(value);
  }
  await writeJsonl(metricsFile, done, { sync: false });
  return { step: state.step, seconds: state.seconds };
}

/** The reconstruction error per step (metrics.jsonl) as a log-scale line, titled with the held-out FVU and L0. */
async function writeLossCurve(file: string, metricsFile: string, metrics: SaeMetrics): Promise<void> {
  const curve: { step: number; mse: number }[] = [];
  for await (const { value } of readJsonl(metricsFile)) curve.push(value as { step: number; mse: number });
  await fs.writeFile(file, await renderSvg({
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
}
