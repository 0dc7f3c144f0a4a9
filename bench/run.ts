// `npm run bench [-- --quick] [--full] [--backend cpu|webgpu] [--only matmul|attention|rmsnorm|loss] [--no-peers]`
//
// Times rank1's kernels on each backend it has here, and the peer libraries on the same matmuls in the same
// process, prints a table and rank1's speedup over each peer beside the project brief's targets, and writes
// every number with the machine's description to bench/results/<date>-<machine>.json. See bench/README.md.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, Option } from 'commander';
import { getCpuBackend, type Backend } from '../src/tensor/index.ts';
import { measureCase, skippedResult, type CaseGroup, type CaseResult, type CaseSpec, type MeasureSettings } from './harness.ts';
import {
  describeEnvironment, installNavigatorGpu, isSoftwareAdapter, machineName, packageVersions, probeAdapter, repoRoot,
  type AdapterSummary,
} from './environment.ts';
import {
  matmulInputs, peerMatmulCase, rank1Bf16WeightMatmulCase, rank1MatmulCase, rank1MulAddMatmulCase,
  type MatmulInputs, type MatmulPeer,
} from './cases/matmul.ts';
import {
  lossRows, lossVocab, profileLinearCrossEntropy, rank1CrossEntropyCase, torchCrossEntropySpec, type LossProfile,
} from './cases/loss.ts';
import { torchCrossEntropyResult } from './peers/torch-loss.ts';
import { probeTorch, torchImplementation, torchMatmulResult } from './peers/torch.ts';
import { matmulDescription } from '../src/kernels/cpu/matmul.ts';
import { rank1AttentionCase } from './cases/attention.ts';
import { rank1RmsNormCase, rmsNormRows } from './cases/rmsnorm.ts';
import { loadTfjsWasm, loadTfjsWebGpu } from './peers/tfjs.ts';
import { loadGpuJs } from './peers/gpujs.ts';
import type { PeerLoad } from './peers/types.ts';
import { computeRatios, formatProgress, formatRatioTable, formatResultsTable } from './report.ts';
import type { Implementation } from './harness.ts';

process.env.XDG_RUNTIME_DIR ??= os.tmpdir(); // before Dawn loads: Mesa's Vulkan loader wants it

interface Options {
  quick: boolean;
  full: boolean;
  backend?: 'cpu' | 'webgpu';
  only?: CaseGroup;
  peers: boolean;
  out?: string;
  note?: string;
}

const program = new Command()
  .name('npm run bench --')
  .description('rank1 kernel benchmarks against tfjs-backend-wasm, tfjs-backend-webgpu and gpu.js')
  .option('--quick', 'sizes 256-1024 only, short time budget per case (a couple of minutes on 2 cores)', false)
  .option('--full', 'also run what is skipped as too slow: 2048² on a software GPU, projected-slow cases', false)
  .addOption(new Option('--backend <name>', 'only this rank1 backend and the peers on the same kind of device').choices(['cpu', 'webgpu']))
  .addOption(new Option('--only <group>', 'only this group of cases').choices(['matmul', 'attention', 'rmsnorm', 'loss']))
  .option('--no-peers', 'rank1 only')
  .option('--note <text>', 'a note written into the results JSON (e.g. what else was running on the machine)')
  .option('--out <file>', 'write the JSON here instead of bench/results/<date>-<machine>[-variant].json')
  .parse();
const options = program.opts<Options>();

interface RunPlan {
  matmulSizes: number[];
  bf16Size: number;
  attentionTokens: number[];
  attentionBackwardTokens: number[];
  rmsNormHidden: number[];
  measure: MeasureSettings;
  /** Cases whose projected time per iteration (from the size below) is over this are skipped. */
  maxProjectedMs: number;
}

const plan: RunPlan = options.quick
  ? {
    matmulSizes: [256, 512, 1024], bf16Size: 1024, attentionTokens: [256, 1024], attentionBackwardTokens: [256],
    rmsNormHidden: [896, 3584],
    measure: { budgetMs: 400, minIterations: 2, singleSampleOverMs: 2500 },
    maxProjectedMs: options.full ? Infinity : 12_000,
  }
  : {
    matmulSizes: [256, 512, 1024, 2048], bf16Size: 1024, attentionTokens: [256, 1024], attentionBackwardTokens: [256],
    rmsNormHidden: [896, 3584],
    measure: { budgetMs: 2000, minIterations: 3, singleSampleOverMs: 15_000 },
    maxProjectedMs: options.full ? Infinity : 60_000,
  };

const wantCpu = options.backend !== 'webgpu';
const wantWebGpu = options.backend !== 'cpu';
const wantGroup = (group: CaseGroup) => !options.only || options.only === group;

// ---- devices ------------------------------------------------------------------------------------

// The adapter is described even under --backend cpu, so that a machine's result files share one name.
let adapter: AdapterSummary | { reason: string };
try {
  adapter = await probeAdapter(await installNavigatorGpu());
} catch (error) {
  adapter = { reason: `Dawn (the webgpu package) failed to load: ${(error as Error).message.split('\n')[0]}` };
}
const environment = describeEnvironment(adapter);

const rank1Backends: Backend[] = [];
const rank1Info: Record<string, { description: string } | { skipped: string }> = {};
let webgpuBackend: (Backend & { destroy?: () => void }) | null = null;
if (wantCpu) {
  const cpu = getCpuBackend();
  rank1Backends.push(cpu);
  rank1Info.cpu = { description: cpu.description };
}
if (wantWebGpu) {
  try {
    const { probeWebGpu } = await import('../src/kernels/webgpu/index.ts');
    const probe = await probeWebGpu();
    if ('backend' in probe) {
      webgpuBackend = probe.backend;
      rank1Backends.push(probe.backend);
      rank1Info.webgpu = { description: probe.backend.description };
    } else {
      rank1Info.webgpu = { skipped: probe.reason };
    }
  } catch (error) {
    rank1Info.webgpu = { skipped: `the WebGPU backend (src/kernels/webgpu/index.ts) failed to load: ${(error as Error).message.split('\n')[0]}` };
  }
}
const softwareGpu = environment.adapter?.software ||
  (webgpuBackend !== null && isSoftwareAdapter({ description: webgpuBackend.description }));

console.log(`rank1 bench${options.quick ? ' --quick' : ''}${options.full ? ' --full' : ''} on ${environment.hostname}: ` +
  `${environment.cpuModel}, ${environment.cores} cores, node ${environment.node}, load average ${environment.loadAverage.join(' ')}`);
if (environment.loadAverage[0]! > environment.cores / 2) {
  console.log(`note: the machine is busy (1-minute load ${environment.loadAverage[0]} on ${environment.cores} cores): CPU timings will be noisy`);
}
if (wantWebGpu) {
  console.log(environment.adapter
    ? `WebGPU adapter (navigator.gpu, Dawn): ${environment.adapter.description} [${environment.adapter.vendor}, ${environment.adapter.architecture}]` +
      `${softwareGpu ? ' — a software rasteriser: 2048² GPU cases are skipped unless --full' : ''}`
    : `WebGPU adapter: none (${environment.adapterSkipped})`);
}
for (const [name, info] of Object.entries(rank1Info)) {
  console.log('description' in info ? `rank1 ${name}: ${info.description}` : `SKIPPED rank1 ${name}: ${info.skipped}`);
}

// ---- peers --------------------------------------------------------------------------------------

const peerLoads: PeerLoad[] = [];
if (options.peers && wantGroup('matmul')) {
  if (wantCpu) peerLoads.push(await loadTfjsWasm());
  if (wantWebGpu) peerLoads.push(await loadTfjsWebGpu());
  peerLoads.push(...(await loadGpuJs({ cpu: wantCpu, webgpu: wantWebGpu })));
}
const peerInfo: Record<string, unknown> = {};
// PyTorch runs in a child process (bench/peers/torch.ts), so it is not a MatmulPeer: its rows are measured there.
const torch = options.peers && (wantGroup('matmul') || wantGroup('loss')) && wantCpu ? probeTorch() : null;
if (torch) {
  peerInfo[torchImplementation.name] = 'version' in torch
    ? { version: torch.version, python: '/usr/bin/python3', how: 'bench/peers/torch_matmul.py (matmul, on the same A and B) and torch_cross_entropy.py (loss, on the same logits) in a child process; torch.set_num_threads(os.cpu_count())' }
    : { skipped: torch.skipped };
  console.log('version' in torch ? `peer pytorch: torch ${torch.version} (/usr/bin/python3, child process)` : `SKIPPED peer pytorch: ${torch.skipped}`);
}
// On a runtime with relaxed SIMD, rank1's CPU matmul is also timed on the mul+add kernel (RANK1_WASM_RELAXED_SIMD=0).
const alsoMulAdd = wantCpu && wantGroup('matmul') && matmulDescription().includes('relaxed fma');
const peers: MatmulPeer[] = [];
const unavailablePeers: { impl: Implementation; reason: string }[] = [];
for (const load of peerLoads) {
  if ('peer' in load) {
    peers.push(load.peer);
    peerInfo[load.peer.impl.name] = load.info;
    const notes = Object.entries(load.info).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
    console.log(`peer ${load.peer.impl.name}: ${notes}`);
  } else {
    unavailablePeers.push({ impl: load.impl, reason: load.skipped });
    peerInfo[load.impl.name] = { skipped: load.skipped };
    console.log(`SKIPPED peer ${load.impl.name}: ${load.skipped}`);
  }
}

// ---- cases --------------------------------------------------------------------------------------

/** How cost grows with CaseSpec.size, to project the next size from the one below. */
const growth: Record<CaseGroup, number> = { matmul: 3, attention: 2, rmsnorm: 1, loss: 1 };
const familyOf = (r: { impl: string; case: string; size: number }) => `${r.impl}|${r.case.replace(String(r.size), '#')}`;

function skipReason(spec: CaseSpec, done: CaseResult[]): string | null {
  if (spec.impl.device === 'webgpu' && softwareGpu && spec.group === 'matmul' && spec.size >= 2048 && !options.full) {
    return `${spec.size}² on a software GPU adapter takes minutes per case; --full runs it`;
  }
  const family = familyOf({ impl: spec.impl.name, case: spec.name, size: spec.size });
  const previous = done.filter((r) => familyOf(r) === family && r.size < spec.size && r.meanMs !== undefined).at(-1);
  if (previous) {
    const projected = previous.meanMs! * (spec.size / previous.size) ** growth[spec.group];
    if (projected > plan.maxProjectedMs) {
      return `projected ${(projected / 1000).toFixed(0)} s per iteration from ${previous.case} ` +
        `(over the ${(plan.maxProjectedMs / 1000).toFixed(0)} s cap; --full runs it)`;
    }
  }
  return null;
}

type Planned = CaseSpec | CaseResult;
const planned: (() => Planned)[] = [];
const devices = (['cpu', 'webgpu'] as const).filter((d) => (d === 'cpu' ? wantCpu : wantWebGpu));
const rank1Implementation = (device: 'cpu' | 'webgpu'): Implementation => ({ name: `rank1 ${device}`, device, kind: 'rank1' });
const skippedBecause = (info: { description: string } | { skipped: string } | undefined) =>
  info && 'skipped' in info ? info.skipped : 'not set up';

/** Plans `make(backend)` on every rank1 device, or a skipped row that says why a device has no backend. */
function onEachRank1Backend(spec: { group: CaseGroup; name: string; size: number }, make: (backend: Backend) => CaseSpec): void {
  for (const device of devices) {
    const backend = rank1Backends.find((b) => b.name === device);
    if (backend) planned.push(() => make(backend));
    else planned.push(() => skippedResult({ ...spec, impl: rank1Implementation(device), setup: notRun }, skippedBecause(rank1Info[device])));
  }
}
const notRun = async (): Promise<never> => {
  throw new Error('not run');
};

if (wantGroup('matmul')) {
  let inputs: MatmulInputs | null = null;
  for (const n of plan.matmulSizes) {
    // One seeded A and B per size, shared by every implementation (and freed before the next size).
    const sized = () => (inputs?.n === n ? inputs : (inputs = matmulInputs(n)));
    const spec = { group: 'matmul' as const, name: `matmul f32 ${n}²`, size: n };
    for (const device of devices) {
      const backend = rank1Backends.find((b) => b.name === device);
      if (backend) planned.push(() => rank1MatmulCase(backend, sized()));
      else planned.push(() => skippedResult({ ...spec, impl: rank1Implementation(device), setup: notRun }, skippedBecause(rank1Info[device])));
      for (const peer of peers) if (peer.impl.device === device) planned.push(() => peerMatmulCase(peer, sized()));
      for (const { impl, reason } of unavailablePeers) {
        if (impl.device === device) planned.push(() => skippedResult({ ...spec, impl, setup: notRun }, reason));
      }
      if (device === 'cpu' && alsoMulAdd) {
        const cpu = rank1Backends.find((b) => b.name === 'cpu');
        if (cpu) planned.push(() => rank1MulAddMatmulCase(cpu, sized()));
      }
      if (device === 'cpu' && torch) {
        planned.push(() => {
          const peerSpec = peerMatmulCase({ impl: torchImplementation, setup: notRun }, sized());
          if ('skipped' in torch) return skippedResult(peerSpec, torch.skipped);
          const reason = skipReason(peerSpec, results);
          return reason ? skippedResult(peerSpec, reason) : torchMatmulResult(peerSpec, sized(), plan.measure);
        });
      }
    }
  }
  const n = plan.bf16Size;
  onEachRank1Backend({ group: 'matmul', name: `matmul bf16-weight ${n}² (transB)`, size: n },
    (backend) => rank1Bf16WeightMatmulCase(backend, matmulInputs(n)));
}
if (wantGroup('attention')) {
  for (const [tokensList, withBackward] of [[plan.attentionTokens, false], [plan.attentionBackwardTokens, true]] as const) {
    for (const tokens of tokensList) {
      onEachRank1Backend({ group: 'attention', name: `attention ${withBackward ? 'fwd+bwd' : 'fwd'} T=${tokens}`, size: tokens },
        (backend) => rank1AttentionCase(backend, tokens, withBackward));
    }
  }
}
if (wantGroup('rmsnorm')) {
  for (const hidden of plan.rmsNormHidden) {
    onEachRank1Backend({ group: 'rmsnorm', name: `rmsNorm fwd ${rmsNormRows}×${hidden}`, size: hidden },
      (backend) => rank1RmsNormCase(backend, hidden));
  }
}

if (wantGroup('loss')) {
  for (const which of ['fwd', 'bwd', 'fwd+bwd', 'fused'] as const) {
    onEachRank1Backend({ group: 'loss', name: `crossEntropy ${which} ${lossRows}×${lossVocab}`, size: lossVocab },
      (backend) => rank1CrossEntropyCase(backend, which));
  }
  if (wantCpu && torch) {
    planned.push(() => {
      const { spec, inputs } = torchCrossEntropySpec();
      return 'skipped' in torch ? skippedResult(spec, torch.skipped) : torchCrossEntropyResult(spec, inputs, plan.measure);
    });
  }
}

console.log(
  `\nEach iteration runs the op and reads back one output element (which waits for the device), for rank1 and ` +
  `peers alike. tinybench: time ${plan.measure.budgetMs} ms and at least ${plan.measure.minIterations} samples per case ` +
  `after a checked cold call; a cold call over ${plan.measure.singleSampleOverMs / 1000} s is the only sample.\n`,
);

const results: CaseResult[] = [];
for (const make of planned) {
  const item = make();
  let result: CaseResult;
  if ('setup' in item) {
    const reason = skipReason(item, results);
    result = reason ? skippedResult(item, reason) : await measureCase(item, plan.measure);
  } else {
    result = item;
  }
  results.push(result);
  console.log(formatProgress(result));
}

// The chunked loss's time per kernel, once, on the CPU backend (bench/cases/loss.ts).
let lossProfile: LossProfile | null = null;
const profileCpu = rank1Backends.find((b) => b.name === 'cpu');
if (wantGroup('loss') && profileCpu) {
  const rows = 2 * lossRows;
  lossProfile = await profileLinearCrossEntropy(profileCpu, rows);
  console.log(`\nlinearCrossEntropy fwd+bwd, ${rows} rows × V ${lossVocab}, H ${lossProfile.hidden} (bf16 tied W), chunks of ${lossRows}: ` +
    `${(lossProfile.totalMs / 1000).toFixed(2)} s; crossEntropy + crossEntropyBackward ${lossProfile.crossEntropyLogitsGBps.toFixed(2)} GB/s of logits`);
  for (const [kernel, { calls, ms, share }] of Object.entries(lossProfile.byKernel)) {
    if (share >= 0.001) console.log(`  ${kernel.padEnd(22)} ${String(calls).padStart(4)} calls ${ms.toFixed(0).padStart(7)} ms ${(100 * share).toFixed(1).padStart(5)} %`);
  }
}

// ---- report -------------------------------------------------------------------------------------

const ratioSizes = wantGroup('matmul') ? plan.matmulSizes : [];
const ratios = computeRatios(results, ratioSizes);
console.log(`\n${formatResultsTable(results)}\n`);
if (ratioSizes.length && ratios.length) console.log(`${formatRatioTable(ratios, ratioSizes)}\n`);
// The fused cross-entropy against PyTorch's forward + backward on the same logits, measured in this run.
const fusedLoss = results.find((r) => r.impl === 'rank1 cpu' && r.case.startsWith('crossEntropy fused') && r.gbps);
const torchLoss = results.find((r) => r.impl === torchImplementation.name && r.group === 'loss' && r.gbps);
const lossRatio = fusedLoss && torchLoss
  ? { case: fusedLoss.case, rank1GBps: fusedLoss.gbps!, pytorchGBps: torchLoss.gbps!, speedup: fusedLoss.gbps! / torchLoss.gbps! }
  : null;
if (lossRatio) console.log(`${lossRatio.case}: rank1 cpu ${lossRatio.rank1GBps.toFixed(2)} GB/s of logits, PyTorch ${lossRatio.pytorchGBps.toFixed(2)} GB/s: ${lossRatio.speedup.toFixed(2)}× PyTorch\n`);
const wrong = results.filter((r) => r.check && !r.check.ok);
if (wrong.length) console.log(`CHECK FAILED for ${wrong.map((r) => `${r.case} on ${r.impl}`).join(', ')}: those timings measure wrong answers.\n`);

const now = new Date();
const date = `${now.getFullYear()}-${String(now.getMonth() + 1).padStart(2, '0')}-${String(now.getDate()).padStart(2, '0')}`;
const machine = machineName(environment);
const variant = [
  options.quick && 'quick', options.backend, options.only, !options.peers && 'nopeers',
].filter(Boolean).map((v) => `-${v}`).join('');
const outFile = options.out ? path.resolve(options.out) : path.join(repoRoot, 'bench', 'results', `${date}-${machine}${variant}.json`);
const record = {
  date: now.toISOString(),
  machine,
  ...(options.note ? { note: options.note } : {}),
  command: `npm run bench --${process.argv.slice(2).map((a) => ` ${a}`).join('')}`,
  options,
  plan,
  environment,
  loadAverageAtEnd: os.loadavg().map((l) => Math.round(l * 100) / 100),
  versions: packageVersions(),
  rank1: rank1Info,
  peers: peerInfo,
  timing: 'each iteration = the op plus a read-back of one output element (waits for the GPU queue); ' +
    'peers the same (gpu.js webasm returns its whole output, its API has no lighter read)',
  results,
  ratios,
  ...(lossProfile ? { lossProfile } : {}),
  ...(lossRatio ? { lossRatio } : {}),
};
fs.mkdirSync(path.dirname(outFile), { recursive: true });
fs.writeFileSync(outFile, `${JSON.stringify(record, null, 2)}\n`);
console.log(`wrote ${path.relative(process.cwd(), outFile)}`);

webgpuBackend?.destroy?.();
// Dawn's device and gpu.js's worker pool keep the event loop alive; the results are written.
process.exit(0);
