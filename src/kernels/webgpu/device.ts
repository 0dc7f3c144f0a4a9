// Finding a WebGPU device under Node: Dawn (the `webgpu` npm package) on Vulkan first, then on GLES in
// compatibility mode. Every failure becomes a reason string a person can act on.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { onGpu } from './gpu-select.ts';

export interface AcquiredDevice {
  /**
   * The Dawn instance. It must stay reachable as long as the device: once it is garbage collected, Dawn
   * stops processing the device's events and crashes the process on the next wait.
   */
  gpu: GPU;
  device: GPUDevice;
  adapterInfo: GPUAdapterInfo;
  /** Dawn backend asked for: 'vulkan' (the platform default) or 'opengles'. */
  backend: string;
  featureLevel: 'core' | 'compatibility';
  features: ReadonlySet<string>;
}

/** Limits requested at the adapter's maximum: kernels size their bindings and workgroups from these. */
const MAXIMISED_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxUniformBufferBindingSize',
] as const;

const OPTIONAL_FEATURES: GPUFeatureName[] = ['shader-f16', 'subgroups'];

type GpuFactory = (flags: string[]) => GPU;

async function loadDawn(): Promise<GpuFactory | string> {
  try {
    const dawn = await import('webgpu');
    Object.assign(globalThis, dawn.globals);
    return dawn.create;
  } catch (error) {
    return `the 'webgpu' (Dawn) package failed to load: ${(error as Error).message}`;
  }
}

/** A device on `adapter` with the limits and features rank1 uses (also how a browser page gets one). */
export async function requestDevice(
  gpu: GPU, adapter: GPUAdapter, backend: string, featureLevel: 'core' | 'compatibility',
): Promise<AcquiredDevice> {
  const requiredLimits: Record<string, number> = {};
  for (const name of MAXIMISED_LIMITS) {
    const value = (adapter.limits as unknown as Record<string, number | undefined>)[name];
    if (value !== undefined) requiredLimits[name] = value;
  }
  const requiredFeatures = OPTIONAL_FEATURES.filter((feature) => adapter.features.has(feature));
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures, label: 'rank1' });
  return {
    gpu,
    device,
    adapterInfo: adapter.info,
    backend,
    featureLevel,
    features: new Set(requiredFeatures),
  };
}

/** Which Dawn adapters to try: the core (Vulkan) one then GLES compatibility, or only GLES. */
export type AdapterPreference = 'auto' | 'opengles';

/** A device (on the GPU at PCI address `gpu` when given: see gpu-select.ts), or why there is none. */
export async function acquireDevice(preference: AdapterPreference = 'auto', gpu: string | null = null): Promise<AcquiredDevice | { reason: string }> {
  return onGpu(gpu, () => withNativeStderrFiltered(() => findDevice(preference)));
}

/**
 * Dawn's and the drivers' chatter while adapters are found, none of it for the user: Dawn's `Warning:` log
 * lines ("maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 90 to 16 …", "Couldn't load
 * Vulkan: …") with their indented "at …" source line and trailing blank line, Mesa's "lavapipe is not a
 * conformant vulkan implementation" and libEGL's warnings. Every failure that matters comes back as a rejected
 * promise and becomes a reason string; anything else on standard error (an `Error:`, a driver's error) is kept.
 */
export function filterDawnChatter(text: string): string {
  const kept: string[] = [];
  let inWarning = false;
  for (const line of text.split('\n')) {
    if (/^Warning: /.test(line)) { inWarning = true; continue; }
    if (inWarning && (/^\s+at /.test(line) || line.trim() === '')) continue;
    inWarning = false;
    if (/^WARNING: lavapipe is not a conformant vulkan implementation/.test(line) || /^libEGL warning: /.test(line)) continue;
    kept.push(line);
  }
  return kept.join('\n').replace(/^\n+/, '');
}

/**
 * Runs `find` with file descriptor 2 pointed at a temporary file, then points it back and passes on what was
 * written there less Dawn's chatter (`filterDawnChatter`). Dawn's native code prints straight to fd 2, past any
 * JavaScript stream, and has no option to stay quiet (its `Warning:` lines come from dawn::WarningLog, which no
 * toggle or create() flag of the `webgpu` package controls). Linux only (the original is reopened through
 * /proc/self/fd); elsewhere, when that fails, or with RANK1_DAWN_LOGS=1, `find` runs as is and everything shows.
 */
export async function withNativeStderrFiltered<T>(find: () => Promise<T>): Promise<T> {
  if (process.platform !== 'linux' || process.env['RANK1_DAWN_LOGS']) return find();
  let saved: number;
  let capturePath: string;
  try {
    saved = fs.openSync('/proc/self/fd/2', 'a');
  } catch {
    return find(); // stderr is a socket or closed: nothing to redirect safely
  }
  try {
    capturePath = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rank1-dawn-')), 'stderr.txt');
  } catch {
    fs.closeSync(saved);
    return find();
  }
  // open() takes the lowest free descriptor: holes below 2 are filled (and kept filled until 2 is restored).
  const fillers: number[] = [];
  let closed = false;
  let redirected = false;
  try {
    fs.closeSync(2);
    closed = true;
    for (let fd = fs.openSync(capturePath, 'a'); fd !== 2; fd = fs.openSync(capturePath, 'a')) fillers.push(fd);
    redirected = true;
    return await find();
  } finally {
    let captured = '';
    if (closed) {
      if (redirected) fs.closeSync(2);
      const restored = fs.openSync(`/proc/self/fd/${saved}`, 'a');
      for (const fd of fillers) fs.closeSync(fd);
      try {
        captured = fs.readFileSync(capturePath, 'utf8');
      } catch { /* nothing was written */ }
      if (restored !== 2) {
        fs.closeSync(saved);
        throw new Error(`could not restore standard error (reopened as fd ${restored}) after looking for a WebGPU adapter`);
      }
    }
    fs.closeSync(saved);
    fs.rmSync(path.dirname(capturePath), { recursive: true, force: true });
    const rest = filterDawnChatter(captured);
    if (rest.trim() !== '') fs.writeSync(2, rest.endsWith('\n') ? rest : `${rest}\n`);
  }
}

async function findDevice(preference: AdapterPreference): Promise<AcquiredDevice | { reason: string }> {
  process.env.XDG_RUNTIME_DIR ??= os.tmpdir(); // Mesa's Vulkan loader warns and may fail without it
  const create = await loadDawn();
  if (typeof create === 'string') return { reason: create };

  const failures: string[] = [];
  if (preference === 'auto') {
    try {
      const gpu = create([]);
      const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
      if (adapter !== null) return await requestDevice(gpu, adapter, 'vulkan', 'core');
      failures.push('Dawn found no core (Vulkan) adapter: install a Vulkan driver, e.g. mesa-vulkan-drivers');
    } catch (error) {
      failures.push(`the core (Vulkan) adapter failed: ${(error as Error).message}`);
    }
  }

  try {
    process.env.EGL_PLATFORM ??= 'surfaceless';
    const gpu = create(['backend=opengles']);
    const adapter = await gpu.requestAdapter({ featureLevel: 'compatibility' } as GPURequestAdapterOptions);
    if (adapter !== null) return await requestDevice(gpu, adapter, 'opengles', 'compatibility');
    failures.push('no GLES compatibility adapter either (install libegl1 and libgles2 / mesa)');
  } catch (error) {
    failures.push(`the GLES compatibility adapter failed: ${(error as Error).message}`);
  }
  return { reason: `no WebGPU adapter: ${failures.join('; ')}` };
}

/** "webgpu (llvmpipe: Mesa 25.0.7 (LLVM 15.0.6), vulkan, core)". */
export function describeDevice(acquired: AcquiredDevice): string {
  const info = acquired.adapterInfo;
  const device = info.device || [info.vendor, info.architecture].filter(Boolean).join(' ');
  const chip = device.split(/[-\s]/)[0] ?? '';
  // Some backends' descriptions do not name the chip (GLES: "OpenGL version OpenGL ES 3.2 Mesa ..."): add it.
  const name = !info.description ? device || 'unknown adapter'
    : chip && !info.description.includes(chip) ? `${chip} / ${info.description}` : info.description;
  return `webgpu (${name}, ${acquired.backend}, ${acquired.featureLevel})`;
}
