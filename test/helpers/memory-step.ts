// Shared by the memory-estimate tests (CPU and WebGPU): one checkpointed rank-1 training step (forward +
// backward) of a small random model, measured as the backend's high-water mark of live storage bytes less what
// was live before it, and src/train/memory.ts's estimate of the same step.
import type { Backend } from '../../src/kernels/backend.ts';
import { backward } from '../../src/tensor/autograd.ts';
import { div, tidy } from '../../src/tensor/index.ts';
import { randomQwen2Model, randomRankOneAdapters, tinyQwen2Config } from '../../src/model/random-model.ts';
import type { Qwen2Config } from '../../src/model/config.ts';
import type { Qwen2Dims, Qwen2Model } from '../../src/model/qwen2.ts';
import { makeBatch } from '../../src/train/data-batch.ts';
import { batchLossSum } from '../../src/train/trainer.ts';
import { estimateTrainingMemory, type MemoryEstimate } from '../../src/train/memory.ts';
import { disposeAdaptedModel } from './adapted-model.ts';

export interface StepCase {
  name: string;
  config: Partial<Qwen2Config>;
  tokens: number;
  lossChunk: number;
  checkpointDtype: 'f32' | 'bf16';
  /** The frozen weights' dtype (default f32). */
  weightDtype?: 'f32' | 'bf16';
  /** Qwen2Model.layerTokenChunk, where the model has it. */
  layerTokenChunk?: number;
  /** Qwen2Model.offloadCheckpoints, where the model has it. */
  offloadCheckpoints?: boolean;
}

export interface MeasuredStep {
  c: StepCase;
  dims: Qwen2Dims;
  e: MemoryEstimate;
  measured: number;
}

/** Whether Qwen2Model has a field (the token-chunk and offload features land in src/model/qwen2.ts). */
export function modelHas(field: 'layerTokenChunk' | 'offloadCheckpoints', backend: Backend): boolean {
  const model = randomQwen2Model(tinyQwen2Config({ numHiddenLayers: 1 }), 1, backend);
  const has = field in model;
  model.dispose();
  return has;
}

function configure(model: Qwen2Model, c: StepCase): void {
  model.gradientCheckpointing = true;
  model.checkpointDtype = c.checkpointDtype;
  if (c.layerTokenChunk !== undefined) Object.assign(model, { layerTokenChunk: c.layerTokenChunk });
  if (c.offloadCheckpoints !== undefined) Object.assign(model, { offloadCheckpoints: c.offloadCheckpoints });
}

/** The backend's peak of live bytes during one step, less what was live before it. */
export async function measuredStepPeak(backend: Backend, c: StepCase): Promise<{ dims: Qwen2Dims; peak: number }> {
  const config = tinyQwen2Config(c.config);
  const model = randomQwen2Model(config, 1, backend, c.weightDtype ?? 'f32');
  model.adapters = randomRankOneAdapters(model.dims, 1, backend);
  configure(model, c);
  const inputIds = Int32Array.from({ length: c.tokens }, (_, i) => (i * 7919) % config.vocabSize);
  const batch = makeBatch([{ inputIds, lossMask: new Uint8Array(c.tokens).fill(1) }], 0);
  const liveBefore = backend.memory().liveBytes;
  backend.resetPeak();
  const loss = tidy(() => div(batchLossSum(model, batch, c.lossChunk), batch.tokens));
  // Offloaded checkpoints must reach host memory between the forward and the backward (where the model offloads).
  await (model as { settleOffloadedCheckpoints?: () => Promise<void> }).settleOffloadedCheckpoints?.();
  backward(loss);
  const peak = backend.memory().peakBytes - liveBefore;
  loss.dispose();
  const dims = model.dims;
  disposeAdaptedModel(model);
  return { dims, peak };
}

/** Measures each case and sets the estimate beside it (`transposedHeadBytesPerValue` for a WebGPU CPU adapter). */
export async function measureCases(backend: Backend, cases: readonly StepCase[], transposedHead = false): Promise<MeasuredStep[]> {
  const rows: MeasuredStep[] = [];
  for (const c of cases) {
    const { dims, peak } = await measuredStepPeak(backend, c);
    const e = estimateTrainingMemory(dims, 0, 0, 1, c.tokens, true, {
      lossChunk: c.lossChunk, checkpointDtype: c.checkpointDtype, layerTokenChunk: c.layerTokenChunk ?? null,
      offloadCheckpoints: c.offloadCheckpoints ?? false, transposedHeadBytesPerValue: transposedHead ? (c.weightDtype === 'bf16' ? 2 : 4) : 0,
    });
    rows.push({ c, dims, e, measured: peak });
  }
  return rows;
}

/** Whether dropping or doubling `bytes` of each case's estimate takes some case out of ±15 % of its measurement. */
export function someCaseLeavesBand(rows: readonly MeasuredStep[], bytes: (r: MeasuredStep) => number): boolean {
  return rows.some((r) => {
    const ratio = r.e.activations / r.measured;
    const share = bytes(r) / r.measured;
    return Math.abs(ratio - share - 1) > 0.15 && Math.abs(ratio + share - 1) > 0.15;
  });
}

/** A term's bytes where its phase is the case's peak, else 0. */
export function inPeak(phase: MemoryEstimate['terms']['peak'], bytes: (r: MeasuredStep) => number) {
  return (r: MeasuredStep) => (r.e.terms.peak === phase ? bytes(r) : 0);
}
