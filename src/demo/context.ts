// What the demo's steps share: the run's settings, its folder, its log and progress display, demo.json's
// summary (each step fills its part), and what earlier steps made for later ones (`made`/`make`), so a step
// reads its inputs by name and a missing one names the step that should have made it.
import * as path from 'node:path';
import type { Backend } from '../kernels/backend.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import type { TokenizedExample } from '../train/data-rows.ts';
import type { EvalProblem } from '../eval/benchmarks.ts';
import type { WorldOptions } from '../world/make.ts';
import type { ActivationStore } from '../interp/activation-store.ts';
import type { FeatureTopExamples } from '../interp/topk.ts';
import type { SaeFeature } from '../interp/sae-features.ts';
import type { SaeMetrics } from '../interp/sae-train.ts';
import type { DemoEndpoint, DemoSummary, TrainedRun } from './folder.ts';
import type { StepProgress, StepTiming } from './progress.ts';
import type { SecondProcess } from './second-process.ts';
import type { DemoSizes } from './settings.ts';

/** A training's outcome: the step's line, and its steps and final loss for demo.json. */
export interface TrainedModel {
  line: string;
  trained: TrainedRun;
}

/** What the steps hand on, by the step that makes it. */
export interface DemoProducts {
  /** world */
  world: { options: WorldOptions; traces: string; problems: readonly EvalProblem[] };
  /** world: the base's tokenizer and chat template, and the traces tokenized for training. */
  data: { tokenizer: Tokenizer; template: string; examples: readonly TokenizedExample[] };
  /** world, when the settings ask for it: the second process, which runs the full finetune and its evaluation. */
  secondProcess: SecondProcess;
  /** train rank 1: its steps and final loss, for demo.json once the full finetune has run too. */
  loraTraining: TrainedRun;
  /** ablate: the base with the rank-1 adapter, kept for extract (which disposes it). */
  analysisModel: Qwen2Model;
  /** topk */
  features: FeatureTopExamples[];
  /** topk, sae features: the features.jsonl files autointerp and the dashboard read. */
  topkFile: string;
  saeFeaturesFile: string;
  /** sae train: held-out FVU, L0, live and dead latents. */
  saeMetrics: SaeMetrics;
  /** sae features */
  latents: SaeFeature[];
  /** The store, opened by topk for the SAE steps. */
  store: ActivationStore;
}

export interface DemoSettings {
  /** The demo folder (absolute). */
  out: string;
  /** The base model folder (absolute). */
  base: string;
  sizes: DemoSizes;
  mode: 'default' | 'quick';
  seed: number;
  backend: Backend;
  endpoint?: DemoEndpoint;
  /** Run the full finetune and its evaluation in a second process, alongside the rest (CPU backend, ≥ 2 cores). */
  secondProcess: boolean;
}

export class DemoContext {
  private readonly products: Partial<DemoProducts> = {};
  /** Lines to print once the current step's own line is out (taken by the runner). */
  readonly pendingNotes: string[] = [];
  /** The current step's own figures in the second process, when it ran there (taken by the runner). */
  alongside: StepTiming | null = null;

  constructor(
    readonly settings: DemoSettings,
    readonly progress: StepProgress,
    /** The library's own lines (training, world, extraction) go to demo.log, so the terminal keeps one display. */
    readonly log: (line: string) => void,
    readonly summary: DemoSummary,
  ) {}

  /** A line printed after the current step's line (e.g. how to do what the step skipped). */
  afterStep(line: string): void {
    this.pendingNotes.push(line);
  }

  /** A path inside the demo folder. */
  at(...parts: string[]): string {
    return path.join(this.settings.out, ...parts);
  }

  make<K extends keyof DemoProducts>(key: K, value: DemoProducts[K]): DemoProducts[K] {
    this.products[key] = value;
    return value;
  }

  made<K extends keyof DemoProducts>(key: K): DemoProducts[K] {
    const value = this.products[key];
    if (value === undefined) throw new Error(`demo: "${key}" is needed before the step that makes it has run`);
    return value;
  }

  /** The second process, if the world step started one. */
  secondProcess(): SecondProcess | null {
    return this.products.secondProcess ?? null;
  }

  /** Disposes the analysis model if a step left it (a failure between ablate and extract); stops the second process if it still runs. */
  dispose(): void {
    this.products.analysisModel?.dispose();
    delete this.products.analysisModel;
    this.products.secondProcess?.stop();
  }

  /** Hands the analysis model over for disposal by the caller. */
  takeAnalysisModel(): Qwen2Model {
    const model = this.made('analysisModel');
    delete this.products.analysisModel;
    return model;
  }
}

/** One step of the demo: its name (the progress line) and what it does, returning the line printed as it ends. */
export interface DemoStep {
  name: string;
  run(context: DemoContext): Promise<string>;
}
