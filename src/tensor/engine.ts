// Which backend new tensors go to. Ops dispatch on their inputs' backend; creation functions use this default.
import type { Backend, BackendName } from '../kernels/backend.ts';
import { createCpuBackend } from '../kernels/cpu/index.ts';

let defaultBackend: Backend | null = null;
let cpuBackend: Backend | null = null;

export function getCpuBackend(): Backend {
  cpuBackend ??= createCpuBackend();
  return cpuBackend;
}

export function getDefaultBackend(): Backend {
  defaultBackend ??= getCpuBackend();
  return defaultBackend;
}

export function setDefaultBackend(backend: Backend): void {
  defaultBackend = backend;
}

export interface BackendChoice {
  backend: Backend;
  /** Why this backend was chosen, e.g. "webgpu: no adapter (…), using cpu". Printed by the CLI. */
  reason: string;
}

/**
 * Picks a backend by name; 'auto' means webgpu when an adapter answers, else cpu, and says which.
 * Sets it as the default for new tensors.
 */
export async function initBackend(name: BackendName | 'auto' = 'auto'): Promise<BackendChoice> {
  if (name === 'cpu') {
    const backend = getCpuBackend();
    setDefaultBackend(backend);
    return { backend, reason: `using ${backend.description} (asked for cpu)` };
  }
  const { probeWebGpu } = await import('../kernels/webgpu/index.ts');
  const probe = await probeWebGpu();
  if ('backend' in probe) {
    setDefaultBackend(probe.backend);
    const software = /llvmpipe|lavapipe|swiftshader|software/i.test(probe.backend.description);
    const hint = software && name === 'auto' ? ' — a software rasterizer: --backend cpu is usually faster here' : '';
    return { backend: probe.backend, reason: `using ${probe.backend.description}${hint}` };
  }
  if (name === 'webgpu') throw new Error(`backend webgpu was asked for but is unavailable: ${probe.reason}`);
  const backend = getCpuBackend();
  setDefaultBackend(backend);
  return { backend, reason: `webgpu unavailable (${probe.reason}); using ${backend.description}` };
}
