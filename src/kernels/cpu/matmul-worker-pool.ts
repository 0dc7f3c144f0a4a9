// Worker threads for the CPU matmul. The matmul is synchronous, so there is no message passing per job:
// the main thread writes a job descriptor into the shared WebAssembly memory, opens the job's admission word,
// bumps a generation word and Atomics.notify()s; every thread (main included) then runs the module's
// `runTasks`, pulling tasks off an atomic counter until none is left.
//
// The main thread never waits for a worker the OS has not run yet. A worker joins a job by incrementing the
// admission word's count, which it may do only while the word still carries that job's tag and is open.
// When the main thread has run out of tasks it closes the word: the count is then fixed, and it waits for
// exactly those workers to finish. A worker that comes too late (asleep, or descheduled: on a VM that can be
// a millisecond) finds the word closed or tagged for a newer job and skips the job, whose tasks the main
// thread ran itself. A joined worker keeps the descriptor alive: the next job is written only after it
// has finished.
//
// A job may ask its threads to poll before they sleep (as OpenMP runtimes do): after it, a worker polls the
// generation word for up to the job's `spinMicroseconds` before it Atomics.wait()s, and the main thread polls
// the finished count as long before it does. Waking a sleeping thread costs tens of microseconds on a VM, as
// much as one of decode's smaller products takes in all, and decode runs ~170 of them per token with short
// gaps between. Only such jobs poll: a busy thread that polls takes a core from other work (a second
// training process, the main thread's own elementwise ops), which a matmul that runs for milliseconds
// does not repay.

import { Worker } from 'node:worker_threads';
import { ADMISSION, CONTROL, LAYOUT } from './matmul-wasm.ts';

// Plain JavaScript run with `eval: true`, so it needs no TypeScript loader (vitest, tsx and node all work).
const WORKER_SOURCE = `
'use strict';
const { workerData } = require('node:worker_threads');
const { module, memory, thread, control: C, admission: A, controlOffset, generation, joinDelayMs } = workerData;
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
/** Joins job \`current\` if it is still open: the admission word carries its tag and no close bit. */
function join(current) {
  const open = (current & A.tagMask) << A.tagShift;
  for (;;) {
    const word = Atomics.load(control, C.admission);
    if ((word & ~A.joinedMask) !== open) return false;
    if (Atomics.compareExchange(control, C.admission, word, word + 1) === word) return true;
  }
}
const pause = new Int32Array(new SharedArrayBuffer(4));
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
  if (joinDelayMs > 0) Atomics.wait(pause, 0, 0, joinDelayMs); // tests: a worker the OS runs late
  if (!join(current)) continue;
  try {
    runTasks(thread);
  } catch (error) {
    console.error('rank1 matmul worker ' + thread + ' failed:', error);
    Atomics.store(control, C.failed, 1);
  }
  Atomics.add(control, C.finished, 1);
  Atomics.notify(control, C.finished);
}
`;

/** How long the first matmul waits for its workers to start before giving up on them. */
const STARTUP_TIMEOUT_MS = 30_000;

export class MatmulWorkerPool {
  private readonly workers: Worker[] = [];
  private readonly control: Int32Array;
  private closed = false;

  /** Jobs run on helpers, and those of them that the main thread finished alone (no worker came in time). */
  readonly stats = { jobs: 0, finishedAlone: 0 };

  /**
   * Starts `workerCount` workers (thread indices 1..workerCount) and blocks until they are running.
   * `joinDelayMs` (tests only) makes every worker sleep that long before it joins a job.
   */
  constructor(module: WebAssembly.Module, memory: WebAssembly.Memory, readonly workerCount: number, joinDelayMs = 0) {
    this.control = new Int32Array(memory.buffer, LAYOUT.control, 64);
    const generation = Atomics.load(this.control, CONTROL.generation);
    for (let thread = 1; thread <= workerCount; thread++) {
      const worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: { module, memory, thread, control: CONTROL, admission: ADMISSION, controlOffset: LAYOUT.control, generation, joinDelayMs },
        name: `rank1-matmul-${thread}`,
      });
      worker.unref(); // never keep the process alive
      worker.on('error', (error) => console.error(`rank1 matmul worker ${thread}:`, error));
      this.workers.push(worker);
    }
    // Worker startup needs no help from this thread's event loop, so blocking here is safe; it lets the first
    // jobs use the workers rather than find none that can join.
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
   * Runs the job already written to the shared memory on up to `threads` threads: workers 1..threads-1 that
   * join in time and, through `runOnMain`, this thread as thread 0. Returns when every task is done and every
   * worker that joined has finished. Threads poll for `spinMicroseconds` (this thread for the workers to
   * finish, the workers for the next job) before they sleep.
   */
  run(threads: number, runOnMain: () => void, spinMicroseconds = 0): void {
    if (this.closed) throw new Error('rank1 matmul: worker pool is shut down');
    const helpers = Math.min(threads, this.workerCount + 1) - 1;
    if (helpers > 0) {
      Atomics.store(this.control, CONTROL.spinMicroseconds, spinMicroseconds);
      Atomics.store(this.control, CONTROL.failed, 0);
      Atomics.store(this.control, CONTROL.threads, helpers + 1);
      Atomics.store(this.control, CONTROL.finished, 0);
      const generation = (Atomics.load(this.control, CONTROL.generation) + 1) | 0;
      Atomics.store(this.control, CONTROL.admission, (generation & ADMISSION.tagMask) << ADMISSION.tagShift); // open, nobody joined
      Atomics.store(this.control, CONTROL.generation, generation);
      Atomics.notify(this.control, CONTROL.generation);
      this.stats.jobs++;
    }
    try {
      runOnMain();
    } finally {
      // Even when the main share threw, joined workers may still be writing to the memory: wait them out.
      if (helpers > 0) this.waitForJoined(spinMicroseconds);
    }
    if (helpers > 0 && Atomics.load(this.control, CONTROL.failed) !== 0) {
      throw new Error('rank1 matmul: a worker thread failed (see stderr)');
    }
  }

  /** Closes the current job's admission and waits for the workers that joined it to finish. */
  private waitForJoined(spinMicroseconds: number): void {
    const joined = Atomics.or(this.control, CONTROL.admission, ADMISSION.closed) & ADMISSION.joinedMask;
    if (joined === 0) this.stats.finishedAlone++;
    const spinUntil = performance.now() + spinMicroseconds / 1000;
    while (Atomics.load(this.control, CONTROL.finished) < joined && performance.now() < spinUntil);
    for (let finished = Atomics.load(this.control, CONTROL.finished); finished < joined;
      finished = Atomics.load(this.control, CONTROL.finished)) {
      Atomics.wait(this.control, CONTROL.finished, finished);
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
