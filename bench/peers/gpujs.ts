// gpu.js peers. gpu.js transpiles a JavaScript kernel (one output cell per thread) to its backends; the
// matmul below is the one from its README, over flat arrays. Modes measured:
//   webasm          WebAssembly SIMD, synchronous calls: one thread.
//   webasm threads  the same under asyncMode, split over a worker_threads pool (one worker per core).
//   webgpu          WGSL compute shaders through navigator.gpu (Dawn, the adapter rank1 uses).
//   headlessgl      its default Node backend, which needs the optional native module `gl`.
import os from 'node:os';
import { createRequire } from 'node:module';
import type { Implementation, Runnable } from '../harness.ts';
import type { MatmulInputs, MatmulPeer } from '../cases/matmul.ts';
import { installNavigatorGpu } from '../environment.ts';
import { errorText, type PeerLoad } from './types.ts';

/** The part of gpu.js this file uses (its own typings predate the webasm and webgpu modes' settings). */
interface GpuJsKernel {
  (...args: unknown[]): unknown;
  destroy(): void;
}
interface GpuJsInstance {
  createKernel(source: string, settings: Record<string, unknown>): GpuJsKernel;
  destroy(): Promise<void> | void;
}
interface GpuJsStatic {
  new (settings: { mode: string }): GpuJsInstance;
  isHeadlessGLSupported: boolean;
  isWebAssemblySupported: boolean;
  isWebGPUAvailable(): Promise<boolean>;
}
/** A result left on the GPU (`pipeline: true` on webgpu). */
interface GpuResident {
  delete?(): void;
}

// A string, not a function: tsx would rewrite a function's source before gpu.js parses it.
const matmulSource = `function (a, b) {
  let sum = 0;
  for (let i = 0; i < this.constants.k; i++) {
    sum += a[this.thread.y * this.constants.k + i] * b[i * this.constants.n + this.thread.x];
  }
  return sum;
}`;

const implOf = (name: string, device: 'cpu' | 'webgpu'): Implementation => ({ name, device, kind: 'peer' });
export const gpuJsImplementations = {
  webasm: implOf('gpu.js webasm', 'cpu'),
  webasmThreads: implOf('gpu.js webasm threads', 'cpu'),
  webgpu: implOf('gpu.js webgpu', 'webgpu'),
  headlessgl: implOf('gpu.js headlessgl', 'webgpu'),
};

let gpuJsPromise: Promise<GpuJsStatic> | null = null;
function importGpuJs(): Promise<GpuJsStatic> {
  gpuJsPromise ??= import('gpu.js').then((module) => {
    const exports = ((module as { default?: unknown }).default ?? module) as { GPU: GpuJsStatic };
    return exports.GPU;
  });
  return gpuJsPromise;
}

const firstOf = (result: unknown): number => (result as ArrayLike<ArrayLike<number>>)[0]![0]!;

function webAssemblyPeer(GPU: GpuJsStatic, threads: number | null): MatmulPeer {
  const gpu = new GPU({ mode: 'webasm' });
  const impl = threads ? gpuJsImplementations.webasmThreads : gpuJsImplementations.webasm;
  return {
    impl,
    async setup(inputs: MatmulInputs): Promise<Runnable> {
      const { n, a, b } = inputs;
      const kernel = gpu.createKernel(matmulSource, {
        output: [n, n], constants: { k: n, n },
        ...(threads ? { asyncMode: true, poolSize: threads } : {}),
      });
      return {
        iterate: async () => firstOf(await kernel(a, b)),
        dispose: () => kernel.destroy(),
      };
    },
  };
}

function webGpuPeer(GPU: GpuJsStatic): MatmulPeer {
  const gpu = new GPU({ mode: 'webgpu' });
  return {
    impl: gpuJsImplementations.webgpu,
    async setup(inputs: MatmulInputs): Promise<Runnable> {
      const { n } = inputs;
      // Upload A and B once (immutable, so the second upload does not reuse the first one's buffer), keep
      // C on the GPU (pipeline), and read back one element with a 1-cell kernel: the same work per
      // iteration as rank1 and tfjs, rather than gpu.js's default full readback into nested arrays.
      const upload = gpu.createKernel('function (x) { return x[this.thread.x]; }', { output: [n * n], pipeline: true, immutable: true });
      const kernel = gpu.createKernel(matmulSource, { output: [n, n], constants: { k: n, n }, pipeline: true });
      const pick = gpu.createKernel('function (c) { return c[0][0]; }', { output: [1] });
      const a = (await upload(inputs.a)) as GpuResident;
      const b = (await upload(inputs.b)) as GpuResident;
      return {
        async iterate() {
          const c = await kernel(a, b);
          return ((await pick(c)) as ArrayLike<number>)[0]!;
        },
        dispose() {
          a.delete?.();
          b.delete?.();
          for (const k of [upload, kernel, pick]) k.destroy();
        },
      };
    },
  };
}

/** Why gpu.js has no headless-gl backend here, from the module resolution itself. */
function headlessGlReason(): string {
  const require = createRequire(import.meta.url);
  try {
    const gpuJsDir = require.resolve('gpu.js');
    createRequire(gpuJsDir).resolve('gl');
    return 'the native module gl is installed but gpu.js could not create a headless-gl context';
  } catch {
    return 'its optional native dependency gl (headless-gl) is not installed: npm found no prebuilt ' +
      'binary it could download and could not build one (node-gyp needs the X11, Xi and Xext development headers)';
  }
}

export interface GpuJsModes {
  cpu: boolean;
  webgpu: boolean;
}

export async function loadGpuJs(modes: GpuJsModes): Promise<PeerLoad[]> {
  const loads: PeerLoad[] = [];
  let GPU: GpuJsStatic;
  try {
    if (modes.webgpu) await installNavigatorGpu();
    GPU = await importGpuJs();
  } catch (error) {
    const reason = `gpu.js failed to load: ${errorText(error)}`;
    const impls = [
      ...(modes.cpu ? [gpuJsImplementations.webasm, gpuJsImplementations.webasmThreads] : []),
      ...(modes.webgpu ? [gpuJsImplementations.webgpu, gpuJsImplementations.headlessgl] : []),
    ];
    return impls.map((impl) => ({ impl, skipped: reason }));
  }
  if (modes.cpu) {
    if (!GPU.isWebAssemblySupported) {
      const skipped = 'GPU.isWebAssemblySupported is false';
      loads.push({ impl: gpuJsImplementations.webasm, skipped }, { impl: gpuJsImplementations.webasmThreads, skipped });
    } else {
      const threads = os.availableParallelism();
      loads.push({ peer: webAssemblyPeer(GPU, null), info: { threads: 1, simd: true, calls: 'synchronous' } });
      loads.push({ peer: webAssemblyPeer(GPU, threads), info: { threads, simd: true, calls: 'asyncMode, worker_threads pool' } });
    }
  }
  if (modes.webgpu) {
    const available = await GPU.isWebGPUAvailable().catch(() => false);
    if (available) loads.push({ peer: webGpuPeer(GPU), info: { device: 'navigator.gpu (Dawn, webgpu npm package)' } });
    else loads.push({ impl: gpuJsImplementations.webgpu, skipped: 'GPU.isWebGPUAvailable() is false: navigator.gpu gave no adapter' });
    if (GPU.isHeadlessGLSupported) {
      // Not benchmarked: GL on this machine would be the same software rasteriser, through ANGLE.
      loads.push({ impl: gpuJsImplementations.headlessgl, skipped: 'headless-gl is available but not benchmarked (webgpu mode covers gpu.js on this GPU)' });
    } else {
      loads.push({ impl: gpuJsImplementations.headlessgl, skipped: headlessGlReason() });
    }
  }
  return loads;
}
