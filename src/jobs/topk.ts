// The top-k job, as `rank1 topk` and `rank1 demo` both run it: an activation store in; OUT/features.jsonl out
// (every adapter direction, both polarities, and the MLP-neuron baseline when the store has it).
//   open the store → its tokenizer → topActivations → features.jsonl
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { loadTokenizer, type Tokenizer } from '../model/tokenizer.ts';
import { ActivationStore } from '../interp/activation-store.ts';
import { writeFeaturesJsonl } from '../interp/features-file.ts';
import { TOPK_DEFAULTS, topActivations, type FeatureTopExamples, type TopkOptions } from '../interp/topk.ts';

/** What `rank1 topk` and `rank1 sae features` write into their folder. */
export const FEATURES_FILE = 'features.jsonl';

export { TOPK_DEFAULTS };

export interface TopkJobOptions {
  /** The activation store folder (rank1 extract). */
  store: string;
  out: string;
  k?: number;
  context?: number;
  minAbs?: number;
  /**
   * The tokenizer that decodes the contexts. A model folder's path: its tokenizer.json; absent: the store's own
   * copy, else its model folder's. null when none is found (context_tokens are then empty).
   */
  tokenizer?: Tokenizer | string;
}

export interface TopkJobProgress {
  onProgress?: TopkOptions['onProgress'];
}

export interface TopkJobResult {
  features: FeatureTopExamples[];
  /** OUT/features.jsonl. */
  file: string;
  /** Tokens in the store. */
  tokens: number;
  /** Whether a tokenizer decoded the contexts. */
  decoded: boolean;
}

export async function runTopk(options: TopkJobOptions, progress: TopkJobProgress = {}): Promise<TopkJobResult> {
  const store = await ActivationStore.open(options.store);
  const tokenizer = typeof options.tokenizer === 'object' ? options.tokenizer : await storeTokenizer(store, options.store, options.tokenizer);
  const features = await topActivations(store, {
    k: options.k ?? TOPK_DEFAULTS.k, context: options.context ?? TOPK_DEFAULTS.context, minAbs: options.minAbs ?? TOPK_DEFAULTS.minAbs,
    tokenizer, onProgress: progress.onProgress,
  });
  await fs.mkdir(options.out, { recursive: true });
  const file = path.join(options.out, FEATURES_FILE);
  await writeFeaturesJsonl(file, features);
  return { features, file, tokens: store.index.tokens, decoded: tokenizer !== null };
}

/** The store keeps a copy of the model's tokenizer; a model folder given overrides it; else the store's model folder. */
async function storeTokenizer(store: ActivationStore, storeDir: string, modelDir?: string): Promise<Tokenizer | null> {
  return await loadTokenizer(modelDir ?? storeDir).catch(() => null)
    ?? await loadTokenizer(store.index.model).catch(() => null);
}
