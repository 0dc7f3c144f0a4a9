// `npx tsx bench/wasm-bandwidth.ts`: how fast WebAssembly can stream memory on this machine, the ceiling under
// the decode's bf16 GEMV (issue 21 measures decode against PyTorch's bandwidth, bench/peers/torch_bandwidth.py).
// A 1 GiB buffer in shared WebAssembly memory is summed with 128-bit loads (v128.load, four f32x4 accumulators,
// 64 bytes a pass) by one thread and by two (main + a worker, each half), best of several passes, next to the
// PyTorch peer's figure (AVX-512, 2 threads) from the same run.
//   npx tsx bench/wasm-bandwidth.ts [--gib 1] [--passes 5] [--out bench/results/x.json]
import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { Command } from 'commander';
import { WasmModule } from '../src/kernels/cpu/wasm-assembler.ts';
import { torchBandwidth } from './peers/torch.ts';

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

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { sum } = new WebAssembly.Instance(workerData.module, { env: { memory: workerData.memory } }).exports;
parentPort.on('message', ({ from, bytes }) => parentPort.postMessage(sum(from, bytes)));
`;

async function main(): Promise<void> {
  const options = new Command().option('--gib <n>', 'buffer size', Number, 1).option('--passes <n>', 'timed passes', Number, 5).option('--out <file>').parse().opts<{ gib: number; passes: number; out?: string }>();
  const bytes = Math.round(Math.min(options.gib, 1) * 2 ** 30 / 128) * 128; // halves of whole blocks; ≤ 1 GiB keeps the count exact
  const pages = Math.ceil(bytes / PAGE);
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
  // Every page touched before timing; a 1 in the first f32 of each 64-byte block, so the sum (lane 0 of the
  // accumulators) counts the blocks read: bytes / 64, exact in f32 up to 1 GiB. Lane 1 holds the block's index
  // so that no two pages are alike, as with weights (torch_bandwidth.py sums random values for the same reason).
  const view = new Float32Array(memory.buffer);
  view.fill(0);
  for (let i = 0; i < bytes / 4; i += 16) {
    view[i] = 1;
    view[i + 1] = i / 16;
  }
  const module = sumModule(pages);
  const { sum } = new WebAssembly.Instance(module, { env: { memory } }).exports as { sum: (from: number, bytes: number) => number };
  const worker = new Worker(WORKER, { eval: true, workerData: { module, memory } });
  const onWorker = (from: number, n: number) => new Promise<number>((resolve) => { worker.once('message', resolve); worker.postMessage({ from, bytes: n }); });
  const best = async (run: () => Promise<number> | number): Promise<number> => {
    let fastest = Infinity;
    for (let i = 0; i < options.passes + 1; i++) {
      const start = performance.now();
      const total = await run();
      const ms = performance.now() - start;
      if (total !== bytes / 64) throw new Error(`read ${total} of ${bytes / 64} blocks`);
      if (i > 0) fastest = Math.min(fastest, ms); // the first pass warms up
    }
    return bytes / (fastest / 1000) / 1e9;
  };
  const half = bytes / 2;
  const one = await best(() => sum(0, bytes));
  const two = await best(async () => {
    const other = onWorker(half, half);
    const mine = sum(0, half);
    return mine + await other;
  });
  await worker.terminate();
  const torch = torchBandwidth();
  const result = {
    what: 'WebAssembly memory streaming: Σ of a buffer with 128-bit loads, best of the passes, against PyTorch\'s 2-thread sum in the same run',
    date: new Date().toISOString(), node: process.version, bytes,
    wasmOneThreadGBs: one, wasmTwoThreadsGBs: two,
    torch: torch,
  };
  console.log(`WebAssembly v128 sum over ${(bytes / 2 ** 30).toFixed(2)} GiB: 1 thread ${one.toFixed(1)} GB/s, 2 threads ${two.toFixed(1)} GB/s`);
  if ('gbPerSecond' in torch) console.log(`PyTorch (${torch.threads} threads) ${torch.gbPerSecond.toFixed(1)} GB/s: WebAssembly with 2 threads streams ${(two / torch.gbPerSecond).toFixed(2)} of it`);
  if (options.out) fs.writeFileSync(options.out, `${JSON.stringify(result, null, 2)}\n`);
}

await main();
