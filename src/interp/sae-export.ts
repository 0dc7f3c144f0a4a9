// `rank1 sae export`: the SAE as a SAELens folder.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Backend } from '../kernels/backend.ts';
import { writeSafetensors } from '../model/safetensors.ts';
import { writeJsonAtomic } from '../io/atomic.ts';
import { readSaeFolder } from './sae-folder.ts';

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
