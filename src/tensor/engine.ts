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
 * Picks a backend by name and sets it as the default for new tensors. 'auto' means WebGPU when an adapter
 * answers and it is a real GPU; a software rasterizer (llvmpipe, lavapipe, SwiftShader, …) is slower than the
 * CPU backend, so auto passes it over and says so. The reason is printed by the CLI. `gpu`: the PCI address of
 * the GPU the WebGPU device is made on (kernels/webgpu/gpu-select.ts), the driver's default when null.
 */
export async function initBackend(name: BackendName | 'auto' = 'auto', gpu: string | null = null): Promise<BackendChoice> {
  if (name === 'cpu') {
    const backend = getCpuBackend();
    setDefaultBackend(backend);
    return { backend, reason: `using ${backend.description} (asked for cpu)` };
  }
  const { probeWebGpu, decideWebGpu } = await import('../kernels/webgpu/index.ts');
  const probe = await probeWebGpu({ gpu });
  if ('backend' in probe) {
    const verdict = decideWebGpu(name, probe.backend.runtime.acquired.adapterInfo, probe.backend.description, getCpuBackend().description);
    if (verdict.use === 'webgpu') {
      setDefaultBackend(probe.backend);
      return { backend: probe.backend, reason: verdict.reason };
    }
    probe.backend.destroy();
    const backend = getCpuBackend();
    setDefaultBackend(backend);
    return { backend, reason: verdict.reason };
  }
  if (name === 'webgpu') throw new Error(`backend webgpu was asked for but is unavailable: ${probe.reason}`);
  const backend = getCpuBackend();
  setDefaultBackend(backend);
  return { backend, reason: `webgpu unavailable (${probe.reason}); using ${backend.description}` };
}
