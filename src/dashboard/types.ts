// The data a dashboard site reads: written by src/dashboard/build.ts as plain scripts (data/index.js, then
// data/features-NNN.js loaded on demand), so the site works from file:// with no server.
import type { EmbeddedModelFiles } from '../browser/protocol.ts';

export type DashboardFeatureKind = 'adapter' | 'mlp' | 'sae' | 'other';

/** One row of the feature list: everything the search, the filters and the sorting need. */
export interface FeatureSummary {
  name: string;
  kind: DashboardFeatureKind;
  layer: number | null;
  /** q_proj … down_proj for adapter directions, up_proj for MLP neurons. */
  projection: string | null;
  polarity: 'pos' | 'neg' | null;
  /** Tokens where it is active (|value| above the top-k threshold, this polarity). */
  active: number;
  /** The most extreme value (signed). */
  max: number;
  explanation: string | null;
  class: 0 | 1 | 2 | null;
  category: string | null;
  /** Zero-ablation KL of the feature's adapter (adapter directions), when an ablation was given. */
  kl: number | null;
  /** Which data/features-NNN.js holds its details. */
  chunk: number;
}

export interface ExampleDetail {
  example: number;
  position: number;
  value: number;
  tokens: string[];
  /** This feature's value at every token (absent for files written before context_values existed). */
  values: number[] | null;
  center: number;
}

export interface FeatureDetail {
  name: string;
  hook: string;
  histogram: { edges: number[]; counts: number[] };
  examples: ExampleDetail[];
  /** SAE latents: the decoder row over the adapter hooks, largest |weight| first. */
  decoder: { hook: string; weight: number }[] | null;
}

export interface AblationOverview {
  examples: number;
  tokens: number;
  fullCe: number;
  /** MLP / attention / all rows of Table 2. */
  table: { label: string; adapters: number; kl: number; ce: number }[];
  /** The 7 × L matrix of single-adapter KLs, for the heat map's largest cells. */
  topAdapters: { hook: string; kl: number; ce: number }[];
  klByLayerSvg: string;
  heatmapSvg: string;
}

export interface DashboardIndex {
  title: string;
  generated: string;
  sources: string[];
  chunks: number;
  features: FeatureSummary[];
  ablation: AblationOverview | null;
  /** Whether the site has playground.html (built with --model). */
  playground: boolean;
}

/** What data/index.js and data/features-NNN.js call, and what data/model.js and data/worker.js define. */
export interface DashboardGlobals {
  RANK1_DASHBOARD_INDEX?: DashboardIndex;
  rank1DashboardChunk?: (chunk: number, features: FeatureDetail[]) => void;
  /** The playground's model and adapter files (built with --model). */
  RANK1_MODEL_FILES?: EmbeddedModelFiles;
  /** The playground's engine worker, as script text (started from a Blob, so file:// works). */
  RANK1_WORKER_SOURCE?: string;
}
