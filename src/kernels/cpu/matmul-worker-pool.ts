// Worker threads for the CPU matmul. The matmul is synchronous, so there is no message passing per job:
// the main thread writes a job descriptor into the shared WebAssembly memory, bumps a generation word and
// Atomics.notify()s; every thread (main included) then runs the module's `runTasks`, pulling tasks off an
// atomic counter, and the main thread waits until the workers' pending count reaches zero.
//
// A job may ask its threads to poll before they sleep (as OpenMP runtimes do): after it, a worker polls the
// generation word for up to the job's `spinMicroseconds` before it Atomics.wait()s, and the main thread polls
// the pending count as long before it does. Waking a sleeping thread costs tens of microseconds on a VM, as
// much as one of decode's smaller products takes in all, and decode runs ~170 of them per token with short
// gaps between. Only such jobs poll: a busy thread that polls takes a core from other work (a second
// training process, the main thread's own elementwise ops), which a matmul that runs for milliseconds
// does not repay.

import { Worker } from 'node:worker_threads';
import { CONTROL, LAYOUT } from './matmul-wasm.ts';

// Plain JavaScript run with `eval: true`, so it needs no TypeScript loader (vitest, tsx and node all work).
const WORKER_SOURCE = `
'use strict';
const { workerData } = require('node:worker_threads');
const { module, memory, thread, control: C, controlOffset, generation } = workerData;
const control = new Int32Array(memory.buffer, controlOffset, 64);
let runTasks = null;
try {
  runTasks = new WebAssembly.Instance(module, { env: { memory } }).exports.runTasks;
} catch (error) {
  console.error('rank1 matmul worker ' + thread + ' failed to start:', error);
  Atomics.store(control, C.failed, 1);
}
Atomics.add(control, C.ready, 1);
Atomics.notify(control, C.ready);
let seen = generation;
let spinMicroseconds = 0;
while (runTasks !== null) {
  const spinUntil = performance.now() + spinMicroseconds / 1000;
  while (Atomics.load(control, C.generation) === seen && performance.now() < spinUntil);
  Atomics.wait(control, C.generation, seen);
  const current = Atomics.load(control, C.generation);
  if (current === seen) continue;
  seen = current;
  if (Atomics.load(control, C.shutdown) !== 0) break;
  spinMicroseconds = Atomics.load(control, C.spinMicroseconds);
  if (thread >= Atomics.load(control, C.threads)) continue;
  try {
    runTasks(thread);
  } catch (error) {
    console.error('rank1 matmul worker ' + thread + ' failed:', error);
    Atomics.store(control, C.failed, 1);
  }
  if (Atomics.sub(control, C.pending, 1) === 1) Atomics.notify(control, C.pending);
}
`;

/** How long the first matmul waits for its workers to start before giving up on them. */
const STARTUP_TIMEOUT_MS = 30_000;

export class MatmulWorkerPool {
  private readonly workers: Worker[] = [];
  private readonly control: Int32Array;
  private closed = false;

  /** Starts `workerCount` workers (thread indices 1..workerCount) and blocks until they are running. */
  constructor(module: WebAssembly.Module, memory: WebAssembly.Memory, readonly workerCount: number) {
    this.control = new Int32Array(memory.buffer, LAYOUT.control, 64);
    const generation = Atomics.load(this.control, CONTROL.generation);
    for (let thread = 1; thread <= workerCount; thread++) {
      const worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: { module, memory, thread, control: CONTROL, controlOffset: LAYOUT.control, generation },
        name: `rank1-matmul-${thread}`,
      });
      worker.unref(); // never keep the process alive
      worker.on('error', (error) => console.error(`rank1 matmul worker ${thread}:`, error));
      this.workers.push(worker);
    }
    // Worker startup needs no help from this thread's event loop, so blocking here is safe; it makes every
    // later job deterministic in which threads take part.
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    for (;;) {
      const ready = Atomics.load(this.control, CONTROL.ready);
      if (ready >= workerCount) break;
      const left = deadline - Date.now();
      if (left <= 0 || Atomics.wait(this.control, CONTROL.ready, ready, left) === 'timed-out') {
        this.shutdown();
        throw new Error(`rank1 matmul: ${workerCount - ready} worker thread(s) did not start`);
      }
    }
    if (Atomics.load(this.control, CONTROL.failed) !== 0) {
      this.shutdown();
      throw new Error('rank1 matmul: a worker thread failed to start');
    }
  }

  /**
   * Runs the job already written to the shared memory on `threads` threads: workers 1..threads-1 and,
   * through `runOnMain`, this thread as thread 0. Returns when every thread is done. Threads poll for
   * `spinMicroseconds` (this thread for the workers to finish, the workers for the next job) before they sleep.
   */
  run(threads: number, runOnMain: () => void, spinMicroseconds = 0): void {
    if (this.closed) throw new Error('rank1 matmul: worker pool is shut down');
    const helpers = Math.min(threads, this.workerCount + 1) - 1;
    if (helpers > 0) {
      Atomics.store(this.control, CONTROL.spinMicroseconds, spinMicroseconds);
      Atomics.store(this.control, CONTROL.failed, 0);
      Atomics.store(this.control, CONTROL.threads, helpers + 1);
      Atomics.store(this.control, CONTROL.pending, helpers);
      Atomics.add(this.control, CONTROL.generation, 1);
      Atomics.notify(this.control, CONTROL.generation);
    }
    try {
      runOnMain();
    } finally {
      // Even when the main share threw, the workers are still writing to the memory: wait them out.
      const spinUntil = performance.now() + spinMicroseconds / 1000;
      while (Atomics.load(this.control, CONTROL.pending) !== 0 && performance.now() < spinUntil);
      for (let pending = Atomics.load(this.control, CONTROL.pending); pending !== 0;
        pending = Atomics.load(this.control, CONTROL.pending)) {
        Atomics.wait(this.control, CONTROL.pending, pending);
      }
    }
    if (helpers > 0 && Atomics.load(this.control, CONTROL.failed) !== 0) {
      throw new Error('rank1 matmul: a worker thread failed (see stderr)');
    }
  }

  shutdown(): void {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.control, CONTROL.shutdown, 1);
    Atomics.add(this.control, CONTROL.generation, 1);
    Atomics.notify(this.control, CONTROL.generation);
    // The loop exits on the shutdown flag; terminate() also covers a worker that is still starting.
    for (const worker of this.workers) void worker.terminate();
  }
}
