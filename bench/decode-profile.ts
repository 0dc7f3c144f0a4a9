// `npx tsx bench/decode-profile.ts`: where one decode step's time goes on the CPU backend, at the Qwen2.5-0.5B
// shape (random bf16 weights, a 16-token prompt): every backend method is timed through a Proxy (the CPU
// kernels are synchronous, so the time is the work), matmuls keyed by their shape with the GB/s they read
// their weights at, the rest by method. What is left is the time outside backend methods (the tensor layer:
// shapes, views, autograd checks, hooks). Prints ms per token and the share of the step.
import { Command } from 'commander';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { tensor } from '../src/tensor/ops.ts';
import { tidy } from '../src/tensor/tensor.ts';
import { noGrad } from '../src/tensor/autograd.ts';
import { KVCache } from '../src/model/qwen2.ts';
import { QWEN25_05B, fastRandomBf16Qwen2Model } from '../src/model/random-model.ts';
import { timedBackend } from './timed-backend.ts';

const options = new Command()
  .option('--layers <n>', 'layers', Number, QWEN25_05B.numHiddenLayers)
  .option('--tokens <n>', 'decode steps timed', Number, 24)
  .parse().opts<{ layers: number; tokens: number }>();

interface MatmulArgs { m: number; n: number; k: number; batch: number; transB: boolean }
/** Bytes of b per matmul key, for the GB/s column. */
const bBytes = new Map<string, number>();
function kernelKey(method: string, args: readonly unknown[]): string {
  if (method !== 'matmul') return method;
  const p = args[4] as MatmulArgs;
  const b = args[2] as { dtype?: string };
  const key = `matmul ${p.batch}x${p.m}x${p.n}x${p.k}${p.transB ? ' tB' : ''} ${b.dtype ?? ''}`;
  bBytes.set(key, p.n * p.k * (b.dtype === 'f32' ? 4 : 2));
  return key;
}
const { backend, byKernel, reset } = timedBackend(getCpuBackend(), kernelKey);
const config = { ...QWEN25_05B, numHiddenLayers: options.layers };
const model = fastRandomBf16Qwen2Model(config, backend);
const ids = (n: number, from: number) => tensor(Int32Array.from({ length: n }, (_, i) => ((from + i) * 7919) % config.vocabSize), [1, n], { backend, dtype: 'i32' });
const cache = new KVCache(model.dims, 1, backend, 16 + options.tokens + 8);
const step = async (n: number, from: number) => {
  const logits = tidy(() => noGrad(() => model.forward(ids(n, from), { cache, lastPositionOnly: true })));
  await logits.toArray();
  logits.dispose();
};
await step(16, 0);
for (let i = 0; i < 4; i++) await step(1, 16 + i);
reset();
const started = performance.now();
for (let i = 0; i < options.tokens; i++) await step(1, 20 + i);
const total = performance.now() - started;
const perToken = (ms: number) => ms / options.tokens;
const inKernels = Object.values(byKernel).reduce((a, e) => a + e.ms, 0);
console.log(`${options.layers} layers, ${options.tokens} tokens: ${perToken(total).toFixed(2)} ms/token; in backend methods ${perToken(inKernels).toFixed(2)} ms (${(100 * inKernels / total).toFixed(0)} %), outside ${perToken(total - inKernels).toFixed(2)} ms`);
for (const [key, e] of Object.entries(byKernel).sort((a, b) => b[1].ms - a[1].ms)) {
  const bytes = bBytes.get(key);
  const rate = bytes === undefined ? '' : `${((bytes * e.calls) / (e.ms * 1e6)).toFixed(1).padStart(6)} GB/s`;
  console.log(`  ${key.padEnd(36)} ${(e.calls / options.tokens).toFixed(0).padStart(4)} calls ${perToken(e.ms).toFixed(2).padStart(7)} ms ${(100 * e.ms / total).toFixed(1).padStart(5)} % ${rate}`);
}
cache.dispose();
model.dispose();
process.exit(0);
