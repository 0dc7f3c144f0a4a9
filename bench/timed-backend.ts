// A backend whose every method is timed: a Proxy around it, so tensors made on it route every kernel through
// the timer. For the CPU backend, whose kernels are synchronous, the time is the work; on WebGPU it would be
// the time to queue it. Used by the loss and SAE profiles.
import type { Backend } from '../src/kernels/backend.ts';

export interface KernelTime {
  calls: number;
  ms: number;
}

export interface TimedBackend {
  backend: Backend;
  /** Key → calls and milliseconds; the key is the method's name unless `keyOf` says otherwise. */
  byKernel: Record<string, KernelTime>;
  /** Forgets what was timed so far (e.g. after warm-up). */
  reset(): void;
}

export function timedBackend(inner: Backend, keyOf: (method: string, args: readonly unknown[]) => string = (method) => method): TimedBackend {
  const byKernel: Record<string, KernelTime> = {};
  const backend = new Proxy(inner, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      if (typeof value !== 'function' || typeof property !== 'string') return value;
      return (...args: unknown[]) => {
        const start = performance.now();
        const out = (value as (...a: unknown[]) => unknown).apply(target, args);
        const entry = (byKernel[keyOf(property, args)] ??= { calls: 0, ms: 0 });
        entry.calls++;
        entry.ms += performance.now() - start;
        return out;
      };
    },
  });
  return { backend, byKernel, reset: () => { for (const key of Object.keys(byKernel)) delete byKernel[key]; } };
}
