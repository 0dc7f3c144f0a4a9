// The SAE folder: sae.safetensors (weights, inference threshold, tokens since each latent fired) and
// config.json (architecture, training settings, what each input column is). Written by `rank1 sae train`
// (and inside each checkpoint), read by `rank1 sae features`, the export and a resume.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Backend } from '../kernels/backend.ts';
import { readSafetensorsHeader, readTensorData, writeSafetensors } from '../model/safetensors.ts';
import { writeJsonAtomic } from '../io/atomic.ts';
import { BatchTopKSae, type SaeConfig, type SaeInference } from './sae.ts';

export const SAE_WEIGHTS_FILE = 'sae.safetensors';
export const SAE_CONFIG_FILE = 'config.json';
/** The held-out evaluation `rank1 sae train` writes beside them (FVU, L0, live and dead latents). */
export const SAE_METRICS_FILE = 'metrics.json';

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
