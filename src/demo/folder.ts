// What `rank1 demo` leaves in its folder, and the shape of its demo.json and table1.json: a leaf that the
// steps, the runner and the report all import (none of them imports another for these). The paths are made
// from the file-name constants of the modules that write each file, so the report links what was written.
import * as path from 'node:path';
import type { CompareTable } from '../eval/compare.ts';
import type { ResultsSummary } from '../eval/results.ts';
import { ADAPTER_CONFIG_FILE } from '../model/load.ts';
import { CONFIG_FILE } from '../model/checkpoint.ts';
import { LOSS_CURVE_FILE } from '../train/trainer.ts';
import { WORLD_FILES } from '../world/make.ts';
import { ABLATION_FILES } from '../interp/figures.ts';
import { STORE_INDEX_FILE } from '../interp/activation-store.ts';
import { SAE_CONFIG_FILE, SAE_METRICS_FILE } from '../interp/sae-folder.ts';
import { INTERPRET_FILES } from '../interp/autointerp-types.ts';
import type { SaeMetrics } from '../interp/sae-train.ts';
import { FEATURES_FILE } from '../jobs/topk.ts';
import type { StepTiming } from './progress.ts';
import type { DemoSizes } from './settings.ts';

/** What `rank1 demo` writes into its folder (and removes from it before a rerun). */
export const DEMO_FILES = {
  manifest: 'demo.json',
  log: 'demo.log',
  world: 'world',
  lora: 'lora',
  full: 'full',
  eval: 'eval',
  table1: 'table1.json',
  ablation: 'ablation',
  store: 'store',
  storeTraces: 'store-traces.jsonl',
  topk: 'topk',
  sae: 'sae',
  saeFeatures: 'sae-features',
  interpret: 'interpret',
  dashboard: 'dashboard',
  report: 'report.html',
} as const;

/** The three models of Table 1. */
export type DemoRole = 'base' | 'lora' | 'full';

/** Table 2's two models: the rank-1 adapter with its MLP or its attention adapters zero-ablated (`rank1 eval --ablate`). */
export const DEMO_ABLATIONS = ['mlp', 'attention'] as const;
export type DemoAblation = (typeof DEMO_ABLATIONS)[number];


/** A file inside the demo folder, relative to it, '/'-separated (also a link in report.html). */
const inside = (...parts: string[]) => parts.join('/');

/** Every file the report shows or links, relative to the demo folder. */
export const DEMO_PATHS = {
  evalResults: (role: DemoRole) => inside(DEMO_FILES.eval, `${role}.jsonl`),
  ablatedEvalResults: (ablation: DemoAblation) => inside(DEMO_FILES.eval, `lora-${ablation}-ablated.jsonl`),
  loraConfig: inside(DEMO_FILES.lora, ADAPTER_CONFIG_FILE),
  loraLossCurve: inside(DEMO_FILES.lora, LOSS_CURVE_FILE),
  fullConfig: inside(DEMO_FILES.full, CONFIG_FILE),
  fullLossCurve: inside(DEMO_FILES.full, LOSS_CURVE_FILE),
  ablation: (file: keyof typeof ABLATION_FILES) => inside(DEMO_FILES.ablation, ABLATION_FILES[file]),
  storeIndex: inside(DEMO_FILES.store, STORE_INDEX_FILE),
  topkFeatures: inside(DEMO_FILES.topk, FEATURES_FILE),
  saeMetrics: inside(DEMO_FILES.sae, SAE_METRICS_FILE),
  saeConfig: inside(DEMO_FILES.sae, SAE_CONFIG_FILE),
  saeLossCurve: inside(DEMO_FILES.sae, LOSS_CURVE_FILE),
  saeFeatures: inside(DEMO_FILES.saeFeatures, FEATURES_FILE),
  interpret: (file: keyof typeof INTERPRET_FILES) => inside(DEMO_FILES.interpret, INTERPRET_FILES[file]),
  world: inside(DEMO_FILES.world, WORLD_FILES.world),
  dashboard: inside(DEMO_FILES.dashboard, 'index.html'),
} as const;

export interface DemoEndpoint {
  /** OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1. */
  url: string;
  /** Model name sent to the endpoint. */
  model: string;
  apiKey?: string;
}

export interface Table1Row extends ResultsSummary {
  /** Results JSONL, relative to the demo folder. */
  file: string;
}

/** table1.json: Table 1 on the toy world's held-out problems. */
export interface Table1 {
  bench: 'toy';
  problems: number;
  base: Table1Row;
  lora: Table1Row;
  full: Table1Row;
  /** 100 · (lora − base) / (full − base); null when full == base. */
  recovery_percent: number | null;
  /** The paper's Table 2: the rank-1 adapter with its MLP or attention adapters removed, on the same problems. */
  table2: Record<DemoAblation, Table2Row>;
  /** The same tables as `rank1 eval --compare --json` prints them. */
  compare: CompareTable;
}

export interface Table2Row extends Table1Row {
  /** 100 · (x − base) / (lora − base): the share of the rank-1 gain kept; null when lora == base. */
  gain_kept_percent: number | null;
}

/** A training's optimizer steps and final loss. */
export interface TrainedRun {
  steps: number;
  finalLoss: number | null;
}

/** demo.json: what ran, how long each step took, and the headline numbers. */
export interface DemoSummary {
  format: 'rank1-demo';
  version: 1;
  status: 'running' | 'complete';
  date: string;
  mode: 'default' | 'quick';
  seed: number;
  backend: { name: string; reason: string };
  machine: { cpu: string | undefined; cores: number; memoryGiB: number; node: string; platform: string };
  base: string;
  sizes: DemoSizes;
  world: { seed: number; version: number; reasoningRows: number; heldoutProblems: number } | null;
  training: { lora: TrainedRun; full: TrainedRun } | null;
  table1: Table1 | null;
  ablation: { examples: number; tokens: number; fullCe: number; mlp: number; attention: number; all: number; topAdapters: { name: string; kl: number }[] } | null;
  store: { examples: number; tokens: number; hooks: number; mlpNeurons: number } | null;
  topk: { features: number; active: number } | null;
  sae: (SaeMetrics & { latentsFiring: number }) | null;
  autointerp: { explained: number; features: number; categories: number; errors: number } | null;
  timings: StepTiming[];
  totalSeconds: number;
}

/** A path as the user would type it from here: relative inside the working folder, else absolute. */
export function shownPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel === '' ? '.' : rel.startsWith('..') || path.isAbsolute(rel) ? path.resolve(file) : rel;
}
