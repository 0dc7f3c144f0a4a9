// What an SAE's latents mean, in the same form as `rank1 topk`: each latent's max-activating examples over an
// activation store (features `sae_{i}`), plus its decoder row read over the adapter hooks, so a user sees which
// adapters a feature is made of.
import { tensor } from '../tensor/ops.ts';
import { keep, tidy } from '../tensor/tensor.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import type { ActivationStore } from './activation-store.ts';
import type { BatchTopKSae, SaeInference } from './sae.ts';
import { topActivationsOfColumns, type FeatureTopExamples, type TopkOptions } from './topk.ts';

export interface DecoderWeight {
  hook: string;
  weight: number;
}

export interface SaeFeature extends FeatureTopExamples {
  latent: number;
  /** The latent's decoder row over the input columns, largest |weight| first (at most `decoderTop`). */
  decoder: DecoderWeight[];
}

export interface SaeFeatureOptions extends TopkOptions {
  inference: SaeInference;
  /** Decoder weights listed per feature. */
  decoderTop?: number;
  tokenizer?: Tokenizer | null;
}

/**
 * Latents of every example of the store (per-token threshold inference, or batch top-k over each example), then
 * the top-k pass; only latents that fired somewhere are returned, in latent order.
 */
export async function saeFeatures(sae: BatchTopKSae, store: ActivationStore, options: SaeFeatureOptions): Promise<SaeFeature[]> {
  const { d, latents: F } = sae.config;
  if (store.index.hooks.length !== d) {
    throw new Error(`${store.dir}: the store has ${store.index.hooks.length} adapter hooks, the SAE takes ${d} inputs (an SAE of another model or adapter?)`);
  }
  const names = Array.from({ length: F }, (_, i) => `sae_${i}`);
  const features = await topActivationsOfColumns(store, [{
    names,
    polarities: 'pos',
    featureOf: (column) => `sae_${column}`,
    valuesOf: async (ex) => {
      const T = ex.inputIds.length;
      const latents = tidy(() => keep(sae.encode(tensor(ex.acts, [T, d], { backend: sae.backend }), options.inference)));
      const values = await latents.toFloat32Array();
      latents.dispose();
      return values;
    },
  }], { ...options, minAbs: options.minAbs ?? 0 });
  const decoder = await sae.wDec.toFloat32Array(); // [F, d]
  const top = options.decoderTop ?? 8;
  return features.flatMap((feature, latent) => {
    if (feature.active_count === 0) return [];
    const row = Array.from({ length: d }, (_, j) => ({ hook: store.index.hooks[j]!, weight: decoder[latent * d + j]! }));
    row.sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
    return [{ ...feature, latent, decoder: row.slice(0, top) }];
  });
}
