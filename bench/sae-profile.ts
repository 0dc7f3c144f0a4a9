// `npx tsx bench/sae-profile.ts`: where one BatchTopK SAE training step's time goes on the CPU backend, at
// bench/sae.ts's shape (d 448, 3 584 latents, k 16, batch 512, 256 dead latents so the aux loss runs): every
// backend method is timed through a Proxy (the CPU kernels are synchronous, so the time is the work), matmuls
// keyed by their shape, elementwise ops by op and shapes. Prints ms per step and the share of the step.
import { getCpuBackend } from '../src/tensor/engine.ts';
import { Random } from '../src/tensor/random.ts';
import { AdamW } from '../src/train/adamw.ts';
import { BatchTopKSae, defaultSaeConfig } from '../src/interp/sae.ts';
import { timedBackend } from './timed-backend.ts';

const d = 448;
const batch = 512;
const steps = 8;
const dead = 256;
const shape = (v: unknown) => (v as { shape: number[] }).shape.join('x');
/** Matmuls by their shape, elementwise ops and reductions by op and shapes, the rest by method. */
function kernelKey(method: string, args: readonly unknown[]): string {
  if (method === 'matmul') {
    const p = args[4] as { m: number; n: number; k: number; transA: boolean; transB: boolean; batch: number };
    return `matmul ${p.batch}x${p.m}x${p.n}x${p.k}${p.transA ? ' tA' : ''}${p.transB ? ' tB' : ''}`;
  }
  if (method === 'binary') return `binary ${String(args[0])} ${shape(args[1])} ${shape(args[2])} -> ${(args[3] as number[]).join('x')}`;
  if (method === 'unary') return `unary ${String(args[0])} ${shape(args[1])}`;
  if (method === 'reduce') return `reduce ${String(args[0])} ${args[2]}x${args[3]}x${args[4]}`;
  return method;
}
const { backend: timed, byKernel, reset } = timedBackend(getCpuBackend(), kernelKey);
const config = defaultSaeConfig(d, { expansion: 8, k: 16, deadAfterTokens: 1 });
const sae = new BatchTopKSae(config, timed, 1);
const optimizer = new AdamW(sae.parameters(), { lr: 5e-4, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 });
const rng = new Random(2);
const batches = Array.from({ length: steps + 2 }, () => Float32Array.from({ length: batch * d }, () => rng.normal()));
const mark = () => { sae.tokensSinceFired.fill(0); sae.tokensSinceFired.fill(2, 0, dead); };
for (let i = 0; i < 2; i++) { mark(); await sae.trainStep(batches[i]!, batch, optimizer, 5e-4); }
reset();
const started = performance.now();
for (let i = 0; i < steps; i++) { mark(); await sae.trainStep(batches[2 + i]!, batch, optimizer, 5e-4); }
const total = performance.now() - started;
const inKernels = Object.values(byKernel).reduce((a, e) => a + e.ms, 0);
console.log(`${steps} steps: ${(total / steps).toFixed(1)} ms/step; in backend methods ${(inKernels / steps).toFixed(1)} ms/step (${(100 * inKernels / total).toFixed(0)} %)`);
for (const [k, e] of Object.entries(byKernel).sort((a, b) => b[1].ms - a[1].ms).slice(0, 40)) {
  console.log(`  ${k.padEnd(40)} ${String(e.calls / steps).padStart(5)} calls/step ${(e.ms / steps).toFixed(2).padStart(8)} ms/step ${(100 * e.ms / total).toFixed(1).padStart(5)} %`);
}
