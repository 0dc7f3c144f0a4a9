// `npx tsx bench/wasm-bandwidth.ts`: how fast WebAssembly can stream memory on this machine, the ceiling under
// the decode's bf16 GEMV (issue 21 measures decode against PyTorch's bandwidth, bench/peers/torch_bandwidth.py).
// A 1 GiB buffer in shared WebAssembly memory is summed with 128-bit loads (bench/wasm-stream.ts) by one
// thread and by two (main + a worker, each half), best of several passes, next to the PyTorch peer's figure
// (AVX-512, 2 threads) from the same run.
//   npx tsx bench/wasm-bandwidth.ts [--gib 1] [--passes 5] [--out bench/results/x.json]
import fs from 'node:fs';
import { Command } from 'commander';
import { torchBandwidth } from './peers/torch.ts';
import { WasmStream } from './wasm-stream.ts';

async function main(): Promise<void> {
  const options = new Command().option('--gib <n>', 'buffer size', Number, 1).option('--passes <n>', 'timed passes', Number, 5).option('--out <file>').parse().opts<{ gib: number; passes: number; out?: string }>();
  const bytes = Math.round(Math.min(options.gib, 1) * 2 ** 30 / 128) * 128; // halves of whole blocks; ≤ 1 GiB keeps the count exact
  const stream = new WasmStream(bytes);
  /** The fastest of `passes` after one warm-up pass. */
  const best = async (pass: () => Promise<number> | number): Promise<number> => {
    await pass();
    let fastest = 0;
    for (let i = 0; i < options.passes; i++) fastest = Math.max(fastest, await pass());
    return fastest;
  };
  const one = await best(() => stream.oneThread());
  const two = await best(() => stream.twoThreads());
  await stream.close();
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
