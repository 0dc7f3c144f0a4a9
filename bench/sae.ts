// `npm run bench:sae`: BatchTopK SAE training throughput at the paper's sizes (d 448, 8x = 3584 latents,
// k 16, batch 512) on each backend, against the same step in PyTorch on the same machine
// (bench/peers/torch_sae_step.py, where python3-torch is installed). Target on CPU: ≥ 0.5× PyTorch.
//
//   npm run bench:sae                               # cpu (and webgpu if an adapter answers)
//   npm run bench:sae -- --backend cpu --steps 10 --out bench/results/DATE-sae-cpu.json
import * as fs from 'node:fs';
import { Command } from 'commander';
import type { Backend } from '../src/kernels/backend.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { probeWebGpu } from '../src/kernels/webgpu/index.ts';
import { Random } from '../src/tensor/random.ts';
import { AdamW } from '../src/train/adamw.ts';
import { BatchTopKSae, defaultSaeConfig } from '../src/interp/sae.ts';
import { describeEnvironment } from './environment.ts';
import { torchPeer } from './peers/torch.ts';

const program = new Command()
  .option('--backend <name>', 'all, cpu or webgpu', 'all')
  .option('--d <n>', 'inputs (7·L adapters)', Number, 448)
  .option('--expansion <n>', 'latents per input', Number, 8)
  .option('--batch <n>', 'tokens per step', Number, 512)
  .option('--steps <n>', 'timed steps', Number, 10)
  .option('--dead <n>', 'latents marked dead, so the auxiliary loss runs as it does in training', Number, 256)
  .option('--no-peer', 'skip the PyTorch step')
  .option('--out <file>', 'also write the results JSON here');
program.parse();
const options = program.opts<{ backend: string; d: number; expansion: number; batch: number; steps: number; dead: number; peer: boolean; out?: string }>();

async function benchBackend(backend: Backend): Promise<{ backend: string; stepsPerSecond: number; tokensPerSecond: number }> {
  const config = defaultSaeConfig(options.d, { expansion: options.expansion, k: 16, deadAfterTokens: 1 });
  const sae = new BatchTopKSae(config, backend, 1);
  // Latents [0, dead) count as dead (their counters past deadAfterTokens), so every step runs the aux loss.
  const optimizer = new AdamW(sae.parameters(), { lr: 5e-4, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 });
  const rng = new Random(2);
  const batches = Array.from({ length: options.steps + 2 }, () => Float32Array.from({ length: options.batch * options.d }, () => rng.normal()));
  const mark = () => { sae.tokensSinceFired.fill(0); sae.tokensSinceFired.fill(2, 0, options.dead); };
  for (let i = 0; i < 2; i++) { mark(); await sae.trainStep(batches[i]!, options.batch, optimizer, 5e-4); }
  const started = performance.now();
  for (let i = 0; i < options.steps; i++) { mark(); await sae.trainStep(batches[2 + i]!, options.batch, optimizer, 5e-4); }
  const seconds = (performance.now() - started) / 1000;
  sae.dispose();
  optimizer.dispose();
  const result = { backend: backend.description, stepsPerSecond: options.steps / seconds, tokensPerSecond: (options.steps * options.batch) / seconds };
  console.error(`  ${backend.name}: ${result.stepsPerSecond.toFixed(2)} steps/s, ${result.tokensPerSecond.toFixed(0)} tokens/s`);
  return result;
}

/** PyTorch's SAE step on the same shapes (bench/peers/torch_sae_step.py), or why it was skipped. */
function torchSaeStep(): Record<string, unknown> {
  const result = torchPeer<Record<string, unknown>>('torch_sae_step.py', [
    '--d', String(options.d), '--expansion', String(options.expansion), '--batch', String(options.batch),
    '--steps', String(options.steps), '--dead', String(options.dead),
  ]);
  if ('skipped' in result) console.error(`  pytorch: skipped: ${String(result['skipped'])}`);
  else console.error(`  pytorch ${String(result['torch'])}: ${Number(result['stepsPerSecond']).toFixed(2)} steps/s, ${Number(result['tokensPerSecond']).toFixed(0)} tokens/s (${String(result['threads'])} threads)`);
  return result;
}

console.error(`BatchTopK SAE step: d ${options.d}, ${options.d * options.expansion} latents, k 16, batch ${options.batch}, ${options.dead} dead latents (aux loss on)`);
const results: Record<string, unknown>[] = [];
if (options.backend !== 'webgpu') results.push(await benchBackend(getCpuBackend()));
if (options.backend !== 'cpu') {
  const probe = await probeWebGpu();
  if ('backend' in probe) results.push(await benchBackend(probe.backend));
  else results.push({ backend: 'webgpu', skipped: probe.reason });
}
const peer = options.peer ? torchSaeStep() : { skipped: '--no-peer' };
const cpu = results[0] as { tokensPerSecond?: number } | undefined;
const ratio = cpu?.tokensPerSecond && typeof peer['tokensPerSecond'] === 'number' ? cpu.tokensPerSecond / peer['tokensPerSecond'] : null;
if (ratio !== null) console.error(`  rank1 cpu / pytorch: ${ratio.toFixed(2)}× (target ≥ 0.5×)`);
const report = { bench: 'BatchTopK SAE training step', date: new Date().toISOString(), settings: options, results, peer, cpuOverPytorch: ratio,
  environment: describeEnvironment({ reason: 'not probed here' }) };
const text = `${JSON.stringify(report, null, 2)}\n`;
if (options.out) fs.writeFileSync(options.out, text);
process.stdout.write(text);
process.exit(0);
