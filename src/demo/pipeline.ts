// `rank1 demo`: the paper end to end on the toy world, in this process, from the shipped base (models/toy):
//
//   world        the base's own world, remade from its world.json (hashes checked): traces and held-out problems
//   train        rank-1 adapters on all 7 projections of every layer, and a full finetune, on the same traces (the
//                full finetune and its evaluation in a second process alongside, on the CPU backend with 2+ cores)
//   eval         base, rank 1 and full on the held-out problems (s1's think prompt, greedy) → Table 1, % recovery;
//                rank 1 again with its MLP, then its attention adapters zero-ablated → Table 2, % of the gain kept
//   ablate       zero-ablation sweep of the rank-1 adapter: Figure 1 (7 × L heat map), KL by layer, the KL /
//                cross-entropy table
//   extract      every adapter activation A·x of the traces into an activation store (+ MLP neurons)
//   topk         max-activating examples of every adapter direction (both polarities) and MLP neuron
//   sae          a BatchTopK SAE over the adapter state, then each latent's max-activating examples
//   autointerp   an LLM labels every feature, when an endpoint is given (else a line saying how)
//   report       report.html: the numbers, the figures (embedded) and links to every file
//
// Each step is a {name, run(context)} (steps-training.ts, steps-analysis.ts); the analysis steps are the jobs the
// commands run (src/jobs). Everything lands in one folder; --seed fixes the adapter initialisation, the data order of both trainings,
// the ablation draw and the SAE, so the same seed gives the same numbers (on the same backend).
import * as fs from 'node:fs/promises';
import { appendFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Backend } from '../kernels/backend.ts';
import { DemoContext, type DemoStep } from './context.ts';
import { DEMO_FILES, type DemoEndpoint, type DemoSummary } from './folder.ts';
import { DemoProgress } from './progress.ts';
import type { DemoSizes } from './settings.ts';
import { ANALYSIS_STEPS } from './steps-analysis.ts';
import { TRAINING_STEPS } from './steps-training.ts';

/** The shipped toy base. */
export const TOY_BASE = path.resolve(import.meta.dirname, '../../models/toy');

/** The demo, step by step, in the order they run. */
export const DEMO_STEP_LIST: readonly DemoStep[] = [...TRAINING_STEPS, ...ANALYSIS_STEPS];
export const DEMO_STEPS = DEMO_STEP_LIST.map((step) => step.name);

export interface DemoOptions {
  out: string;
  sizes: DemoSizes;
  mode: 'default' | 'quick';
  seed: number;
  backend: Backend;
  /** Why this backend (initBackend's reason). */
  backendReason: string;
  /** The base model folder (default: the shipped toy base). */
  base?: string;
  endpoint?: DemoEndpoint;
  /** Where the step lines (and, on a terminal, the bar) go; default stderr. */
  progress?: DemoProgress;
  /**
   * Run the full finetune and its evaluation in a second process, alongside the rest (default: on the CPU
   * backend with at least 2 cores, where the training's single-threaded parts then use the second core).
   */
  secondProcess?: boolean;
}

/** Raised for a demo folder that cannot be used; names --out. */
export class DemoFolderError extends Error {}

/**
 * Checks the output folder: missing, empty, or an earlier demo's (its demo.json) — whose outputs are then
 * removed (the autointerp response cache is kept, so a rerun does not pay twice). Anything else is refused.
 */
export async function prepareDemoFolder(out: string): Promise<void> {
  const stat = await fs.stat(out).catch(() => null);
  if (stat && !stat.isDirectory()) throw new DemoFolderError(`--out ${out} is a file, not a folder`);
  if (stat) {
    const entries = await fs.readdir(out);
    if (entries.length > 0) {
      const manifest = await fs.readFile(path.join(out, DEMO_FILES.manifest), 'utf8').then((t) => JSON.parse(t) as { format?: unknown }).catch(() => null);
      if (manifest?.format !== 'rank1-demo') {
        throw new DemoFolderError(`--out ${out} is not empty and holds no earlier rank1 demo (${DEMO_FILES.manifest}); choose a new folder`);
      }
      for (const [key, name] of Object.entries(DEMO_FILES)) {
        if (key === 'interpret') continue;
        await fs.rm(path.join(out, name), { recursive: true, force: true });
      }
      const interpret = path.join(out, DEMO_FILES.interpret);
      for (const entry of await fs.readdir(interpret).catch(() => [] as string[])) {
        if (entry !== 'cache') await fs.rm(path.join(interpret, entry), { recursive: true, force: true });
      }
    }
  }
  await fs.mkdir(out, { recursive: true });
}

/** Runs the whole demo into options.out and returns demo.json's content (also written). */
export async function runDemo(options: DemoOptions): Promise<DemoSummary> {
  const out = path.resolve(options.out);
  const base = path.resolve(options.base ?? TOY_BASE);
  const { sizes, backend, seed } = options;
  const progress = options.progress ?? new DemoProgress(DEMO_STEPS.length);
  await prepareDemoFolder(out);
  const logFile = path.join(out, DEMO_FILES.log);
  const log = (line: string) => appendFileSync(logFile, `${line}\n`);
  log(`rank1 demo (${options.mode}), seed ${seed}, ${options.backendReason}; base ${base}; ${new Date().toISOString()}`);

  const summary: DemoSummary = {
    format: 'rank1-demo', version: 1, status: 'running', date: new Date().toISOString(), mode: options.mode, seed,
    backend: { name: backend.name, reason: options.backendReason },
    machine: { cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), memoryGiB: Math.round(os.totalmem() / 2 ** 30 * 10) / 10, node: process.version, platform: `${os.platform()} ${os.arch()}` },
    base, sizes, world: null, training: null, table1: null, ablation: null, store: null, topk: null, sae: null, autointerp: null,
    timings: progress.timings, totalSeconds: 0,
  };
  const writeSummary = () => fs.writeFile(path.join(out, DEMO_FILES.manifest), `${JSON.stringify(summary, null, 2)}\n`);
  await writeSummary(); // marks the folder as a demo's from the start (a rerun may then clear it)

  const secondProcess = options.secondProcess ?? (backend.name === 'cpu' && os.availableParallelism() >= 2);
  const context = new DemoContext({ out, base, sizes, mode: options.mode, seed, backend, secondProcess, ...(options.endpoint ? { endpoint: options.endpoint } : {}) }, progress, log, summary);
  try {
    for (const step of DEMO_STEP_LIST) {
      progress.begin(step.name);
      const line = await step.run(context);
      progress.end(line, context.alongside);
      context.alongside = null;
      for (const line of context.pendingNotes.splice(0)) progress.note(line);
    }
    summary.totalSeconds = progress.elapsedSeconds;
    await writeSummary();
    return summary;
  } finally {
    context.dispose();
    progress.stop();
  }
}
