// `rank1 sae train | features`: the BatchTopK SAE over the adapter state (src/interp/sae*.ts).
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { BackendName } from '../kernels/backend.ts';
import { initBackend } from '../tensor/engine.ts';
import { loadTokenizer } from '../model/tokenizer.ts';
import { ActivationStore } from '../interp/activation-store.ts';
import { SAE_VARIANTS, defaultSaeConfig, type SaeInference, type SaeVariant } from '../interp/sae.ts';
import { safetensorsSource, storeSource, type ActivationSource } from '../interp/sae-data.ts';
import { exportSaeLens } from '../interp/sae-export.ts';
import { readSaeFolder } from '../interp/sae-folder.ts';
import { trainSae } from '../interp/sae-train.ts';
import { saeFeatures } from '../interp/sae-features.ts';
import { writeFeaturesJsonl } from '../interp/features-file.ts';

import { stopOnCtrlC } from './interrupt.ts';
import { note, progressDisplay } from './io.ts';

export const SAE_DEFAULTS = { k: 16, expansion: 8, batch: 512, lr: 5e-4, warmup: 100, epochs: 1, seed: 1, deadAfter: 1_000_000, saveEvery: 500 } as const;

export interface SaeTrainCommandOptions {
  store?: string;
  input?: string;
  out: string;
  k: number;
  expansion: number;
  batch: number;
  lr: number;
  warmup: number;
  epochs: number;
  seed: number;
  deadAfter: number;
  variant: SaeVariant;
  inference?: SaeInference;
  saveEvery: number;
  resume?: string;
  backend: BackendName | 'auto';
  progress: boolean;
}

export async function saeTrainCommand(options: SaeTrainCommandOptions): Promise<void> {
  if ((options.store === undefined) === (options.input === undefined)) throw new Error('sae train needs exactly one of --store STORE or --input FILE.safetensors');
  const choice = await initBackend(options.backend);
  note(`backend: ${choice.reason}`);
  const source: ActivationSource = options.store ? storeSource(await ActivationStore.open(options.store)) : await safetensorsSource(options.input!);
  const config = defaultSaeConfig(source.d, { expansion: options.expansion, k: options.k, variant: options.variant, deadAfterTokens: options.deadAfter });
  const inference = options.inference ?? SAE_VARIANTS[options.variant].inference;
  note(`SAE: d ${config.d}, ${config.latents} latents, k ${config.k}, ${options.variant}; ${source.tokens} tokens from ${source.what}`);
  const progress = progressDisplay({
    bar: 'step {value}/{total} |{bar}| mse {mse} | L0 {l0} | dead {dead} | ETA {eta_formatted}',
    line: (step, total, values) => `step ${step}/${total}  mse ${values.mse}  L0 ${values.l0}  dead ${values.dead}`,
    enabled: options.progress,
  });
  const interrupt = stopOnCtrlC('saving a checkpoint, then stopping (rerun with --resume OUT to continue)');
  try {
    const metrics = await trainSae({
      source, out: options.out, backend: choice.backend, config, expansion: options.expansion, batch: options.batch, lr: options.lr,
      warmupSteps: options.warmup, epochs: options.epochs, seed: options.seed, inference, saveEvery: options.saveEvery, resume: options.resume,
      shouldStop: interrupt.requested,
      onStep: (step, total, s) => progress.update(step, total, { mse: s.mse.toFixed(4), l0: s.l0.toFixed(1), dead: s.dead }),
    });
    progress.stop();
    if (!metrics) {
      note(`interrupted: checkpoint saved in ${options.out}`);
      return;
    }
    note(`wrote ${options.out}: held-out FVU ${metrics.fvu.toFixed(4)}, L0 ${metrics.l0.toFixed(2)}, ${metrics.live} live / ${metrics.dead} dead latents, ${metrics.steps} steps`);
  } finally {
    progress.stop();
    interrupt.dispose();
  }
}

export interface SaeFeaturesCommandOptions {
  sae: string;
  store: string;
  out: string;
  k: number;
  context: number;
  inference?: SaeInference;
  backend: BackendName | 'auto';
}

export async function saeFeaturesCommand(options: SaeFeaturesCommandOptions): Promise<void> {
  const choice = await initBackend(options.backend);
  note(`backend: ${choice.reason}`);
  const { sae, config } = await readSaeFolder(options.sae, choice.backend);
  const store = await ActivationStore.open(options.store);
  const tokenizer = await loadTokenizer(options.store).catch(() => null);
  const features = await saeFeatures(sae, store, { inference: options.inference ?? config.inference, k: options.k, context: options.context, tokenizer });
  await fs.mkdir(options.out, { recursive: true });
  await writeFeaturesJsonl(path.join(options.out, 'features.jsonl'), features);
  note(`wrote ${path.join(options.out, 'features.jsonl')}: ${features.length} latents that fire (of ${config.latents}) over ${store.index.tokens} tokens`);
  sae.dispose();
}

export async function saeExportCommand(options: { sae: string; out: string }): Promise<void> {
  await initBackend('cpu');
  const { getCpuBackend } = await import('../tensor/engine.ts');
  await exportSaeLens(options.sae, options.out, getCpuBackend());
  note(`wrote ${options.out}: SAELens cfg.json + sae_weights.safetensors (JumpReLU, one threshold per latent); load with sae_lens.SAE.load_from_disk`);
}
