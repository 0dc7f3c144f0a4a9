// The machine a run happened on: CPU, WebGPU adapter, package versions; and the `navigator.gpu` that the
// peer libraries (tfjs-backend-webgpu, gpu.js) look for, from the same Dawn build rank1 uses.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface AdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** lavapipe/llvmpipe, SwiftShader, WARP: a CPU pretending to be a GPU (a few GFLOP/s). */
  software: boolean;
  features: string[];
}

export interface Environment {
  hostname: string;
  platform: string;
  kernel: string;
  arch: string;
  node: string;
  v8: string;
  cpuModel: string;
  cores: number;
  availableParallelism: number;
  memoryGiB: number;
  /** 1/5/15-minute load averages when the run started: other work on the machine skews CPU timings. */
  loadAverage: number[];
  /** The adapter that navigator.gpu (Dawn, default instance) hands out; null when there is none. */
  adapter: AdapterSummary | null;
  adapterSkipped?: string;
}

let installed: GPU | null = null;

/**
 * Installs Dawn's WebGPU globals (GPUBufferUsage, …) and `navigator.gpu` in this Node process, the way a
 * browser has them, so that tfjs-backend-webgpu and gpu.js find a GPU. Returns the GPU object.
 */
export async function installNavigatorGpu(): Promise<GPU> {
  if (installed) return installed;
  process.env.XDG_RUNTIME_DIR ??= os.tmpdir(); // Mesa's Vulkan loader warns and may fail without it
  const dawn = await import('webgpu');
  Object.assign(globalThis, dawn.globals);
  const gpu = dawn.create([]);
  const scope = globalThis as unknown as { navigator?: object };
  scope.navigator ??= {};
  // Node ≥ 21 has a read-only navigator object of its own: define rather than assign.
  Object.defineProperty(scope.navigator, 'gpu', { value: gpu, configurable: true, writable: true });
  if (!('hardwareConcurrency' in scope.navigator)) {
    Object.defineProperty(scope.navigator, 'hardwareConcurrency', { value: os.availableParallelism(), configurable: true });
  }
  installed = gpu;
  return gpu;
}

export function isSoftwareAdapter(info: { architecture?: string; description?: string; device?: string }): boolean {
  return info.architecture === 'software' || /llvmpipe|lavapipe|swiftshader|warp/i.test(`${info.description} ${info.device}`);
}

export async function probeAdapter(gpu: GPU): Promise<AdapterSummary | { reason: string }> {
  try {
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) return { reason: 'navigator.gpu.requestAdapter() returned null (no Vulkan driver?)' };
    const info = adapter.info;
    return {
      vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description,
      software: isSoftwareAdapter(info),
      features: [...adapter.features].sort(),
    };
  } catch (error) {
    return { reason: `requestAdapter failed: ${(error as Error).message}` };
  }
}

export function describeEnvironment(adapter: AdapterSummary | { reason: string }): Environment {
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    platform: os.platform(),
    kernel: os.release(),
    arch: os.arch(),
    node: process.version,
    v8: process.versions.v8,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown cpu',
    cores: cpus.length,
    availableParallelism: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    loadAverage: os.loadavg().map((l) => Math.round(l * 100) / 100),
    adapter: 'reason' in adapter ? null : adapter,
    adapterSkipped: 'reason' in adapter ? adapter.reason : undefined,
  };
}

function slug(text: string, words: number): string {
  return text
    .toLowerCase()
    .replace(/\((r|tm|c)\)/g, ' ')
    .replace(/@.*$/, ' ')
    .replace(/\b(cpu|processor|with|radeon graphics|\d+-core)\b/g, ' ')
    .split(/[^a-z0-9]+/)
    .filter(Boolean)
    .slice(0, words)
    .join('-');
}

/** "vm-amd-epyc-llvmpipe": host, CPU model and GPU adapter, short enough for a file name. */
export function machineName(env: Environment): string {
  const host = slug(env.hostname.split('.')[0]!, 2) || 'host';
  const cpu = slug(env.cpuModel, 3) || 'cpu';
  const gpuText = env.adapter ? (env.adapter.description.split(':')[0] || env.adapter.device || env.adapter.vendor) : 'nogpu';
  const gpu = slug(gpuText, 3) || 'gpu';
  return `${host}-${cpu}-${gpu}`;
}

/** Installed versions of rank1, the peers and the tools, read from their package.json files. */
export function packageVersions(): Record<string, string> {
  const read = (file: string): string => {
    try {
      return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
    } catch {
      return 'not installed';
    }
  };
  const names = [
    '@tensorflow/tfjs-core', '@tensorflow/tfjs-backend-wasm', '@tensorflow/tfjs-backend-webgpu',
    'gpu.js', 'webgpu', 'tinybench', 'tsx', 'typescript',
  ];
  const versions: Record<string, string> = { rank1: read(path.join(repoRoot, 'package.json')) };
  for (const name of names) versions[name] = read(path.join(repoRoot, 'node_modules', name, 'package.json'));
  return versions;
}
