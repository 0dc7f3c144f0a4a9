// The sizes `rank1 demo` runs at: the default (the paper end to end on the toy world in a few minutes on two
// CPU cores) and --quick (the whole path at tiny sizes, for CI; its numbers mean nothing). The full Table 1
// record (`npm run toy:table1`: 5 epochs each, all 256 held-out problems, about 9 minutes for the table alone)
// is in bench/results/2026-11-29-toy-table1-world-v3.json.
import { PAPER_TRAINING, type TrainSettings } from '../train/trainer.ts';

export interface DemoTrainingSizes {
  epochs: number;
  /** Peak learning rate (cosine schedule, 5% warmup, as `rank1 train`). */
  lr: number;
  /** Stop after this many optimizer steps (quick). */
  maxSteps?: number;
}

export interface DemoSizes {
  /** The first N of the world's held-out problems are evaluated. */
  heldout: number;
  /** Problems decoded together. */
  evalBatch: number;
  /** Generation budget per problem (capped at the model's context). */
  evalMaxTokens: number;
  /** Global batch and micro-batch of both trainings (no gradient checkpointing: the toy fits). */
  batch: number;
  microBatch: number;
  lora: DemoTrainingSizes;
  full: DemoTrainingSizes;
  /** Reasoning traces the ablation sweep draws (with --seed) among those over `ablationMinTokens` tokens. */
  ablationExamples: number;
  ablationMinTokens: number;
  /** Reasoning traces written to the activation store (the first N), and MLP neurons per layer (the baseline). */
  extractTraces: number;
  mlpNeurons: number;
  /** Max-activating examples kept per feature, and context tokens either side. */
  topk: { k: number; context: number };
  sae: { k: number; expansion: number; batch: number; lr: number; warmup: number; epochs: number };
}

/**
 * The default run: both trainings on all 256 traces for 3 epochs (48 steps, not the record's 80), each at the
 * learning rate that did best over 48 steps of those measured (first 128 held-out problems, base 9.4%): rank 1
 * at 3e-3 scored 57.0% (1e-3: 35.9%), the full finetune at 1e-3 60.9% (3e-4: 55.5%). The first 128 of the
 * 256 held-out problems; the analysis on 8 ablation traces and a store of the first 128 traces.
 */
export const DEMO_SIZES: DemoSizes = {
  heldout: 128,
  evalBatch: 64,
  evalMaxTokens: 1024,
  batch: 16,
  microBatch: 16,
  lora: { epochs: 3, lr: 3e-3 },
  full: { epochs: 3, lr: 1e-3 },
  ablationExamples: 8,
  ablationMinTokens: 100,
  extractTraces: 128,
  mlpNeurons: 4,
  topk: { k: 64, context: 30 },
  // Sized for the toy store (~30k tokens, not s1K's ~10M): lr 2e-3 as `npm run toy:analysis`, and 20 epochs
  // so that it takes the same ~1 080 steps as that run's 10 over twice the tokens (10 epochs here: FVU 0.37, 20: 0.085).
  sae: { k: 16, expansion: 8, batch: 512, lr: 2e-3, warmup: 100, epochs: 20 },
};

/** --quick: every step at tiny sizes (4 optimizer steps of 8 traces, 16 problems, a store of 16 traces). */
export const QUICK_SIZES: DemoSizes = {
  heldout: 16,
  evalBatch: 16,
  evalMaxTokens: 256,
  batch: 8,
  microBatch: 8,
  lora: { epochs: 1, lr: 3e-3, maxSteps: 4 },
  full: { epochs: 1, lr: 1e-3, maxSteps: 4 },
  ablationExamples: 2,
  ablationMinTokens: 100,
  extractTraces: 16,
  mlpNeurons: 2,
  topk: { k: 8, context: 8 },
  sae: { k: 16, expansion: 8, batch: 512, lr: 2e-3, warmup: 5, epochs: 3 },
};

/**
 * The settings both trainings run with: the paper's (PAPER_TRAINING: AdamW, schedule, clipping, LoRA alpha),
 * the demo's sizes, the run's seed, no gradient checkpointing (the toy fits) and only the final weights saved.
 */
export function demoTrainSettings(sizes: DemoSizes, mode: 'adapter' | 'full', seed: number, padId: number): TrainSettings {
  const run = mode === 'adapter' ? sizes.lora : sizes.full;
  return {
    ...PAPER_TRAINING,
    mode,
    epochs: run.epochs,
    ...(run.maxSteps !== undefined ? { maxSteps: run.maxSteps } : {}),
    batchSize: sizes.batch,
    microBatch: sizes.microBatch,
    lr: run.lr,
    seed,
    gradientCheckpointing: false,
    saveEvery: Number.MAX_SAFE_INTEGER, // the final weights only
    keepCheckpoints: 1,
    padId,
  };
}
