// The demo's second process, as the first one sees it: the full finetune and its evaluation run in a child Node
// process (second-process-main.ts), started as soon as the world is made, while this one trains rank 1 and
// evaluates and analyses it. On the CPU backend a training spends most of its time on one thread (elementwise
// kernels, autograd, the optimizer; only the matmuls use more), so two trainings at once keep both cores of a
// 2-core machine busy. The 'train full' and 'eval full' steps then take the child's results (and its own
// timings) instead of computing them; the numbers are the same as in one process (same code, seed, backend).
import { fork, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { WorldOptions } from '../world/make.ts';
import type { TrainedRun } from './folder.ts';
import type { StepProgress, StepTiming } from './progress.ts';
import type { DemoSizes } from './settings.ts';

/** The steps the second process runs, in its order. */
export const ALONGSIDE_STEPS = ['train full', 'eval full'] as const;
export type AlongsideStep = (typeof ALONGSIDE_STEPS)[number];

/** What the first process sends: the run's settings (the second process makes its own CPU backend). */
export interface SecondProcessJob {
  out: string;
  base: string;
  sizes: DemoSizes;
  mode: 'default' | 'quick';
  seed: number;
  worldOptions: WorldOptions;
}

/** What the second process sends back. */
export type SecondProcessMessage =
  | { type: 'log'; line: string }
  | { type: 'progress'; step: AlongsideStep; value: number; total: number; unit: string; detail: string }
  | { type: 'done'; step: AlongsideStep; line: string; trained: TrainedRun | null; timing: StepTiming }
  | { type: 'failed'; message: string };

/** One step's result from the second process: its line, the training's steps and final loss, its timing there. */
export interface AlongsideResult {
  line: string;
  trained: TrainedRun | null;
  timing: StepTiming;
}

interface Pending {
  promise: Promise<AlongsideResult>;
  resolve: (value: AlongsideResult) => void;
  reject: (error: Error) => void;
}

const MAIN_FILE = fileURLToPath(new URL('./second-process-main.ts', import.meta.url));
/** The TypeScript loader the child starts with (the one bin/rank1.js registers), by absolute URL: any working folder. */
const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
/** The last characters of the child's stderr kept for a failure message. */
const STDERR_TAIL = 4000;

export class SecondProcess {
  private readonly results = new Map<AlongsideStep, Pending>();
  private readonly latest = new Map<AlongsideStep, Extract<SecondProcessMessage, { type: 'progress' }>>();
  /** The step the first process waits on, whose progress is shown. */
  private shown: { step: AlongsideStep; progress: StepProgress } | null = null;
  private stderr = '';

  private constructor(private readonly child: ChildProcess, private readonly log: (line: string) => void) {
    for (const step of ALONGSIDE_STEPS) {
      let resolve!: Pending['resolve'];
      let reject!: Pending['reject'];
      const promise = new Promise<AlongsideResult>((res, rej) => { resolve = res; reject = rej; });
      promise.catch(() => {}); // a failure is raised where the step awaits it, not as an unhandled rejection before
      this.results.set(step, { promise, resolve, reject });
    }
    child.stderr?.on('data', (data: Buffer) => { this.stderr = (this.stderr + data.toString()).slice(-STDERR_TAIL); });
    child.on('message', (message: SecondProcessMessage) => this.receive(message));
    child.on('error', (error) => this.failAll(`the demo's second process could not run: ${error.message}`));
    child.on('close', (code, signal) => this.failAll(`the demo's second process (the full finetune) exited with ${signal ?? `code ${code}`} before it finished${this.stderr ? `:\n${this.stderr.trimEnd()}` : ''}`));
  }

  /** Forks the second process and sends it the job (the world must be made: it reads the traces from it); its log lines go to `log`. */
  static start(job: SecondProcessJob, log: (line: string) => void): SecondProcess {
    const child = fork(MAIN_FILE, [], { execArgv: ['--import', TSX_LOADER], stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    const second = new SecondProcess(child, log);
    child.send(job);
    return second;
  }

  /**
   * Waits for one of the second process's steps, showing its progress on `progress` meanwhile; returns its
   * line, for the training its steps and final loss, and its own timing there.
   */
  async result(step: AlongsideStep, progress: StepProgress): Promise<AlongsideResult> {
    this.shown = { step, progress };
    const last = this.latest.get(step);
    if (last) progress.update(last.value, last.total, last.unit, last.detail);
    try {
      return await this.results.get(step)!.promise;
    } finally {
      this.shown = null;
    }
  }

  /** Ends the child if it still runs (the demo failed or was interrupted first). */
  stop(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill();
  }

  private receive(message: SecondProcessMessage): void {
    switch (message.type) {
      case 'log':
        this.log(message.line);
        break;
      case 'progress':
        this.latest.set(message.step, message);
        if (this.shown?.step === message.step) this.shown.progress.update(message.value, message.total, message.unit, message.detail);
        break;
      case 'done':
        this.results.get(message.step)?.resolve({ line: message.line, trained: message.trained, timing: message.timing });
        break;
      case 'failed':
        this.failAll(`the demo's second process (the full finetune and its evaluation) failed: ${message.message}`);
        break;
    }
  }

  /** Rejects every step not yet done (a step already resolved keeps its result). */
  private failAll(reason: string): void {
    for (const pending of this.results.values()) pending.reject(new Error(reason));
  }
}
