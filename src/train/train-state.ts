// Training checkpoints: everything needed to continue a run exactly where it stopped. A checkpoint is a
// folder `checkpoint-<step>` holding the trained weights (a PEFT adapter folder, or a full model folder),
// the optimizer moments, and trainer_state.json (step, data position, schedule). It is written into a
// temporary folder and renamed into place, so a crash never leaves a half-written checkpoint behind.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Tensor } from '../tensor/tensor.ts';
import { readSafetensorsHeader, readTensorData, writeSafetensors } from '../model/safetensors.ts';
import { writeFolderAtomic, writeJsonAtomic } from '../io/atomic.ts';
import type { AdamW } from './adamw.ts';

export const TRAINER_STATE_FILE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
const CHECKPOINT_PATTERN = /^checkpoint-(\d+)$/;

export interface TrainerState {
  version: 1;
  /** Optimizer updates completed. */
  step: number;
  totalSteps: number;
  /** Opaque data-order state (DataOrder.state()). */
  dataOrder: unknown;
  /** Settings the run was started with; a resume must not change them. */
  settings: Record<string, unknown>;
  /** Wall-clock seconds spent training so far. */
  seconds: number;
  tokensSeen: number;
}

/** Optimizer moments as safetensors: m.<i> and v.<i> for parameter i, plus the step count in metadata. */
async function writeOptimizer(file: string, optimizer: AdamW): Promise<void> {
  const tensors = optimizer.params.flatMap((p, i) => [
    { name: `m.${i}`, dtype: 'F32' as const, shape: [...p.shape], data: () => optimizer.firstMoments[i]!.toFloat32Array() },
    { name: `v.${i}`, dtype: 'F32' as const, shape: [...p.shape], data: () => optimizer.secondMoments[i]!.toFloat32Array() },
  ]);
  await writeSafetensors(file, tensors, { step: String(optimizer.stepCount), parameters: String(optimizer.params.length) });
}

export async function readOptimizer(file: string, optimizer: AdamW): Promise<void> {
  const header = await readSafetensorsHeader(file);
  const count = Number(header.metadata['parameters']);
  if (count !== optimizer.params.length) {
    throw new Error(`${file}: holds optimizer state for ${count} parameters, the run has ${optimizer.params.length}`);
  }
  for (let i = 0; i < count; i++) {
    for (const [prefix, moments] of [['m', optimizer.firstMoments], ['v', optimizer.secondMoments]] as const) {
      const entry = header.tensors.get(`${prefix}.${i}`);
      const target = moments[i]!;
      if (!entry || entry.dtype !== 'F32' || entry.shape.join() !== target.shape.join()) {
        throw new Error(`${file}: ${prefix}.${i} is missing or is not f32 [${target.shape.join(', ')}]`);
      }
      const data = (await readTensorData(file, entry)) as Float32Array;
      const { tensor } = await import('../tensor/ops.ts');
      const upload = tensor(data, target.shape, { backend: target.backend });
      target.backend.assign(target, upload);
      upload.dispose();
    }
  }
  optimizer.stepCount = Number(header.metadata['step']);
}

export interface SaveCheckpointArgs {
  outDir: string;
  state: TrainerState;
  optimizer: AdamW;
  /** Writes the trained weights into a folder (a PEFT adapter folder or a model folder). */
  writeWeights: (dir: string) => Promise<void>;
  /** How many checkpoints to keep (oldest removed first); 0 keeps all. */
  keep: number;
}

/** Writes checkpoint-<step> atomically (temporary folder, then rename) and prunes old ones. */
export async function saveCheckpoint({ outDir, state, optimizer, writeWeights, keep }: SaveCheckpointArgs): Promise<string> {
  const final = path.join(outDir, `checkpoint-${state.step}`);
  await writeFolderAtomic(final, async (dir) => {
    await writeWeights(dir);
    await writeOptimizer(path.join(dir, OPTIMIZER_FILE), optimizer);
    await writeJsonAtomic(path.join(dir, TRAINER_STATE_FILE), state);
  });
  if (keep > 0) {
    const steps = await listCheckpoints(outDir);
    for (const step of steps.slice(0, Math.max(0, steps.length - keep))) {
      await fs.rm(path.join(outDir, `checkpoint-${step}`), { recursive: true, force: true });
    }
  }
  return final;
}

/** Steps of the complete checkpoints in outDir, ascending. */
export async function listCheckpoints(outDir: string): Promise<number[]> {
  let names: string[];
  try {
    names = await fs.readdir(outDir);
  } catch {
    return [];
  }
  const steps: number[] = [];
  for (const name of names) {
    const match = CHECKPOINT_PATTERN.exec(name);
    if (!match) continue;
    const complete = await fs.stat(path.join(outDir, name, TRAINER_STATE_FILE)).then(() => true, () => false);
    if (complete) steps.push(Number(match[1]));
  }
  return steps.sort((a, b) => a - b);
}

/** A checkpoint folder given directly, or the latest one inside a run's output folder. */
export async function resolveCheckpoint(dir: string): Promise<string> {
  if (await fs.stat(path.join(dir, TRAINER_STATE_FILE)).then(() => true, () => false)) return dir;
  const steps = await listCheckpoints(dir);
  if (steps.length === 0) throw new Error(`--resume ${dir}: no checkpoint-<step> folder with ${TRAINER_STATE_FILE} in it`);
  return path.join(dir, `checkpoint-${steps.at(-1)}`);
}

export async function readTrainerState(checkpointDir: string): Promise<TrainerState> {
  const file = path.join(checkpointDir, TRAINER_STATE_FILE);
  let state: TrainerState;
  try {
    state = JSON.parse(await fs.readFile(file, 'utf8')) as TrainerState;
  } catch (error) {
    throw new Error(`${file}: cannot be read: ${(error as Error).message}`);
  }
  if (state.version !== 1 || !Number.isInteger(state.step)) throw new Error(`${file}: not a rank1 trainer state (version ${String(state.version)})`);
  return state;
}

/** Copies each parameter's values from `source` (same shapes) into `target`, in place. */
export function assignParameters(target: readonly Tensor[], source: readonly Tensor[]): void {
  target.forEach((t, i) => {
    const s = source[i]!;
    if (s.shape.join() !== t.shape.join()) throw new Error(`resume: parameter ${t.name ?? i} has shape [${s.shape.join(', ')}], expected [${t.shape.join(', ')}]`);
    t.backend.assign(t, s);
  });
}
