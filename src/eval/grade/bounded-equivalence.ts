// Bounded answer comparison: the fast string path runs here, synchronously; the symbolic path runs in a worker
// thread with a deadline (1 s by default). A comparison past its deadline is "not equal" and reported as a
// timeout; the worker is terminated (a simplification cannot be interrupted from inside) and a fresh one is
// started for the next comparison. The deadline starts when the worker is ready, not while it loads.
import { Worker } from 'node:worker_threads';
import { DEFAULT_COMPARE_OPTIONS, fastEquivalent } from './equivalence.ts';
import type { CompareOptions } from './symbolic.ts';

export const DEFAULT_DEADLINE_MS = 1000;
/** How long a worker may take to load (tsx and the compute engine) before grading gives up on it. */
const STARTUP_LIMIT_MS = 60_000;

export interface Verdict {
  equal: boolean;
  /** True when the symbolic comparison ran past its deadline (and `equal` is therefore false). */
  timedOut: boolean;
}

interface Reply {
  id?: number;
  equal?: boolean;
  ready?: boolean;
}

export class EquivalenceChecker {
  private worker: Worker | null = null;
  private ready: Promise<Worker> | null = null;
  private nextId = 0;

  constructor(private readonly deadlineMs = DEFAULT_DEADLINE_MS) {}

  /** Is `predicted` the `reference` answer? Fast path first, then the bounded symbolic comparison. */
  async compare(predicted: string | null, reference: string, options: CompareOptions = DEFAULT_COMPARE_OPTIONS): Promise<Verdict> {
    if (predicted === null || predicted.trim() === '') return { equal: false, timedOut: false };
    if (fastEquivalent(predicted, reference)) return { equal: true, timedOut: false };
    const worker = await this.start();
    const id = this.nextId++;
    return new Promise<Verdict>((resolve) => {
      const timer = setTimeout(() => {
        worker.off('message', onMessage);
        this.discard(worker);
        resolve({ equal: false, timedOut: true });
      }, this.deadlineMs);
      const onMessage = (reply: Reply) => {
        if (reply.id !== id) return;
        clearTimeout(timer);
        worker.off('message', onMessage);
        resolve({ equal: reply.equal === true, timedOut: false });
      };
      worker.on('message', onMessage);
      worker.postMessage({ id, predicted, reference, precision: options.precision });
    });
  }

  /** Stops the worker (grading can go on: the next comparison starts another). */
  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = null;
    this.ready = null;
    if (worker) await worker.terminate();
  }

  private discard(worker: Worker): void {
    if (this.worker === worker) {
      this.worker = null;
      this.ready = null;
    }
    void worker.terminate();
  }

  private start(): Promise<Worker> {
    this.ready ??= new Promise<Worker>((resolve, reject) => {
      const worker = new Worker(new URL('./equivalence-worker.mjs', import.meta.url));
      worker.unref();
      const limit = setTimeout(() => {
        void worker.terminate();
        reject(new Error(`the grading worker did not start within ${STARTUP_LIMIT_MS / 1000} s`));
      }, STARTUP_LIMIT_MS);
      const onReady = (reply: Reply) => {
        if (!reply.ready) return;
        clearTimeout(limit);
        worker.off('message', onReady);
        this.worker = worker;
        resolve(worker);
      };
      worker.on('message', onReady);
      worker.once('error', (error) => {
        clearTimeout(limit);
        if (this.worker === worker) this.worker = null;
        this.ready = null;
        reject(error);
      });
    });
    return this.ready;
  }
}
