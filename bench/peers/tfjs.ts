// TensorFlow.js peers: tfjs-backend-wasm (XNNPACK, SIMD) and tfjs-backend-webgpu on the same Dawn
// adapter as rank1. One tfjs-core engine holds both; each case selects its backend before uploading.
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Implementation, Runnable } from '../harness.ts';
import type { MatmulInputs } from '../cases/matmul.ts';
import { installNavigatorGpu } from '../environment.ts';
import { errorText, type PeerLoad } from './types.ts';

type Tf = typeof import('@tensorflow/tfjs-core');

const wasmImpl: Implementation = { name: 'tfjs-wasm', device: 'cpu', kind: 'peer' };
const webgpuImpl: Implementation = { name: 'tfjs-webgpu', device: 'webgpu', kind: 'peer' };

let tfPromise: Promise<Tf> | null = null;
const loadCore = () => (tfPromise ??= import('@tensorflow/tfjs-core'));

/** tf.setBackend logs why a backend failed and returns false; this returns the logged reason instead. */
async function selectBackend(tf: Tf, name: string): Promise<string | null> {
  const logged: string[] = [];
  const warn = console.warn;
  console.warn = (...args: unknown[]) => logged.push(args.map((a) => errorText(a)).join(' '));
  try {
    if (await tf.setBackend(name)) return null;
    return logged.join('; ') || `tf.setBackend('${name}') returned false`;
  } catch (error) {
    return errorText(error);
  } finally {
    console.warn = warn;
  }
}

function tfjsMatmulRunnable(tf: Tf, inputs: MatmulInputs): Runnable {
  const { n } = inputs;
  const a = tf.tensor2d(inputs.a, [n, n]);
  const b = tf.tensor2d(inputs.b, [n, n]);
  return {
    async iterate() {
      const c = tf.matMul(a, b);
      // Same end of iteration as rank1: read back one element, which waits for the matmul.
      const first = tf.slice(c, [0, 0], [1, 1]);
      try {
        return (await first.data())[0]!;
      } finally {
        tf.dispose([c, first]);
      }
    },
    dispose() {
      tf.dispose([a, b]);
    },
  };
}

export async function loadTfjsWasm(): Promise<PeerLoad> {
  try {
    const tf = await loadCore();
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    // Under Node the .wasm binaries are read from disk: point the loader at the package's dist folder.
    const require = createRequire(import.meta.url);
    const dist = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + path.sep;
    wasm.setWasmPaths(dist);
    const failure = await selectBackend(tf, 'wasm');
    if (failure) return { impl: wasmImpl, skipped: `tfjs-backend-wasm did not initialise: ${failure}` };
    const threads = wasm.getThreadsCount();
    const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
    const threadsFlag = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
    const threading = threads === 1 && tf.env().get('IS_NODE')
      ? 'single-threaded: tfjs-backend-wasm turns WASM_HAS_MULTITHREAD_SUPPORT off under Node (tensorflow/tfjs#3830)'
      : `${threads} threads`;
    return {
      peer: {
        impl: wasmImpl,
        async setup(inputs) {
          const failed = await selectBackend(tf, 'wasm');
          if (failed) throw new Error(failed);
          return tfjsMatmulRunnable(tf, inputs);
        },
      },
      info: { threads, simd, multithreadSupportFlag: threadsFlag, threading, wasmDir: dist },
    };
  } catch (error) {
    return { impl: wasmImpl, skipped: `tfjs-backend-wasm failed to load: ${errorText(error)}` };
  }
}

export async function loadTfjsWebGpu(): Promise<PeerLoad> {
  try {
    await installNavigatorGpu();
    const tf = await loadCore();
    await import('@tensorflow/tfjs-backend-webgpu');
    const failure = await selectBackend(tf, 'webgpu');
    if (failure) return { impl: webgpuImpl, skipped: `tfjs-backend-webgpu did not initialise: ${failure}` };
    const backend = tf.backend() as unknown as { adapterInfo?: object; device?: GPUDevice };
    const deviceInfo = backend.device?.adapterInfo;
    return {
      peer: {
        impl: webgpuImpl,
        async setup(inputs) {
          const failed = await selectBackend(tf, 'webgpu');
          if (failed) throw new Error(failed);
          return tfjsMatmulRunnable(tf, inputs);
        },
      },
      info: {
        adapterInfo: { ...backend.adapterInfo },
        adapterDescription: deviceInfo?.description,
        adapterDevice: deviceInfo?.device,
      },
    };
  } catch (error) {
    return { impl: webgpuImpl, skipped: `tfjs-backend-webgpu failed to load: ${errorText(error)}` };
  }
}
