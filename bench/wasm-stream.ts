// How fast WebAssembly streams memory right now: a buffer of shared WebAssembly memory summed with 128-bit
// loads (v128.load, four f32x4 accumulators, 64 bytes a pass) by this thread alone, or by this thread and a
// worker, each half. The ceiling under the CPU decode's bf16 GEMV, which reads its weights with the same loads.
//
// Used by bench/wasm-bandwidth.ts (best of several passes, beside PyTorch's AVX-512 figure) and by
// bench/model.ts, which runs one pass between decode tokens: this VM's memory bandwidth swings between about
// 38 and 79 GB/s within minutes (other tenants), so only a figure taken at the same moments as the decode
// says how close the decode comes to what the machine gives WebAssembly.
import { Worker } from 'node:worker_threads';
import { WasmModule } from '../src/kernels/cpu/wasm-assembler.ts';

const PAGE = 65536;

/** sum(from, bytes) -> f32: Σ of the f32s in [from, from + bytes), bytes a multiple of 64. */
function sumModule(pages: number): WebAssembly.Module {
  const module = new WasmModule({ module: 'env', name: 'memory', initial: pages, maximum: pages, shared: true });
  const f = module.addFunction('sum', ['i32', 'i32'], ['f32']);
  const [from, bytes] = [0, 1];
  const [p, end] = [f.local('i32'), f.local('i32')];
  const acc = Array.from({ length: 4 }, () => f.local('v128'));
  f.get(from).get(bytes).op('i32.add').set(end);
  for (const a of acc) f.v128([0, 0, 0, 0]).set(a);
  f.forRange(p, () => f.get(from), () => f.get(end), 64, () => {
    acc.forEach((a, i) => f.get(a).get(p).mem('v128.load', 16 * i).op('f32x4.add').set(a));
  });
  f.get(acc[0]!).get(acc[1]!).op('f32x4.add').get(acc[2]!).op('f32x4.add').get(acc[3]!).op('f32x4.add').extractF32(0);
  return new WebAssembly.Module(module.encode());
}

// The worker is armed by a message, says so in `flags[0]`, then polls `flags[1]` and starts its half the
// moment the main thread starts its own: a worker woken by a message alone starts up to milliseconds late on
// a VM, and the pass would time the wake-up, not the memory.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { sum } = new WebAssembly.Instance(workerData.module, { env: { memory: workerData.memory } }).exports;
const flags = new Int32Array(workerData.flags);
parentPort.on('message', ({ from, bytes }) => {
  Atomics.store(flags, 0, 1);
  while (Atomics.load(flags, 1) === 0);
  Atomics.store(flags, 1, 0);
  parentPort.postMessage(sum(from, bytes));
});
`;

/** How long a pass waits for the worker to be armed before it gives up (it answers in microseconds). */
const WORKER_ARM_TIMEOUT_MS = 10_000;

/** A buffer of `bytes` (a multiple of 128, at most 1 GiB) of shared WebAssembly memory and a worker to sum half of it. */
export class WasmStream {
  private readonly sum: (from: number, bytes: number) => number;
  private readonly worker: Worker;
  /** [armed, go]: see WORKER. */
  private readonly flags = new Int32Array(new SharedArrayBuffer(8));

  constructor(readonly bytes: number) {
    if (!(Number.isInteger(bytes) && bytes > 0 && bytes % 128 === 0 && bytes <= 2 ** 30)) {
      throw new RangeError(`WasmStream: bytes must be a positive multiple of 128 up to 1 GiB, got ${bytes}`);
    }
    const pages = Math.ceil(bytes / PAGE);
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    // Every page touched before timing; a 1 in the first f32 of each 64-byte block, so the sum (lane 0 of the
    // accumulators) counts the blocks read: bytes / 64, exact in f32 up to 1 GiB. Lane 1 holds the block's
    // index so that no two pages are alike, as with weights.
    const view = new Float32Array(memory.buffer);
    for (let i = 0; i < bytes / 4; i += 16) {
      view[i] = 1;
      view[i + 1] = i / 16;
    }
    const module = sumModule(pages);
    this.sum = (new WebAssembly.Instance(module, { env: { memory } }).exports as { sum: (from: number, bytes: number) => number }).sum;
    this.worker = new Worker(WORKER, { eval: true, workerData: { module, memory, flags: this.flags.buffer } });
  }

  /** GB/s of one pass over the buffer on this thread alone. */
  oneThread(): number {
    const started = performance.now();
    this.check(this.sum(0, this.bytes));
    return this.bytes / ((performance.now() - started) * 1e6);
  }

  /** GB/s of one pass over the buffer, this thread and the worker a half each, both starting together. */
  async twoThreads(): Promise<number> {
    const half = this.bytes / 2;
    Atomics.store(this.flags, 0, 0);
    const other = new Promise<number>((resolve) => {
      this.worker.once('message', resolve);
      this.worker.postMessage({ from: half, bytes: half });
    });
    const deadline = performance.now() + WORKER_ARM_TIMEOUT_MS;
    while (Atomics.load(this.flags, 0) === 0) { // until the worker is polling
      if (performance.now() > deadline) throw new Error(`WasmStream: the worker did not answer within ${WORKER_ARM_TIMEOUT_MS} ms`);
      Atomics.wait(this.flags, 0, 0, 1);
    }
    const started = performance.now();
    Atomics.store(this.flags, 1, 1);
    const mine = this.sum(0, half);
    this.check(mine + await other);
    return this.bytes / ((performance.now() - started) * 1e6);
  }

  close(): Promise<number> {
    return this.worker.terminate();
  }

  private check(blocks: number): void {
    if (blocks !== this.bytes / 64) throw new Error(`WasmStream: read ${blocks} of ${this.bytes / 64} blocks`);
  }
}
