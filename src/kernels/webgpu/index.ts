// The WebGPU backend: Dawn (the `webgpu` npm package) under Node, every Backend kernel a WGSL compute shader.
//   device.ts   finding an adapter (Vulkan core, then GLES compatibility) or saying why there is none
//   runtime.ts  storages and the buffer pool, batched submission, pipelines, uniforms, binding windows,
//               device loss and GPU errors
//   wgsl.ts     how each dtype is declared, widened and narrowed in WGSL; uniform structs
//   views.ts    view geometry and the plans that keep every binding under the binding limit
//   strided.ts  the strided elementwise map under copy, assign, unary, binary and fill
//   then one file per kernel family, named as in ../cpu/.

import type { Backend, Storage, View } from '../backend.ts';
import { attention, attentionBackward } from './attention.ts';
import { assign, copyView } from './copy.ts';
import { acquireDevice, describeDevice, type AdapterPreference } from './device.ts';
import { binary, unary } from './elementwise.ts';
import { embedding, embeddingBackward } from './embedding.ts';
import { crossEntropy, crossEntropyBackward, klDiv, klDivBackward } from './loss.ts';
import { matmul } from './matmul.ts';
import { full, read, readRaw, upload } from './memory.ts';
import { adamwStep } from './optimizer.ts';
import { reduce } from './reduce.ts';
import { rmsNorm, rmsNormBackward } from './rmsnorm.ts';
import { rope } from './rope.ts';
import { softmax, softmaxBackward } from './softmax.ts';
import { swiglu, swigluBackward } from './swiglu.ts';
import { addOuter, addOuterBackward, rowDot, rowDotBackward } from './outer.ts';
import { topkMask } from './select.ts';
import { maskedMatmul, maskedMatmulBackward } from './sparse.ts';
import { WebGpuRuntime, type RuntimeOptions } from './runtime.ts';

export { decideWebGpu, softwareRasterizerName, type AdapterIdentity, type WebGpuVerdict } from './adapter-kind.ts';
export interface WebGpuBackendOptions extends RuntimeOptions {
  /** 'opengles': skip the core (Vulkan) adapter and use Dawn's GLES compatibility one. */
  adapter?: AdapterPreference;
  /** The PCI address ("0000:1b:00.0") of the GPU to open the device on; the driver's choice when null or absent. */
  gpu?: string | null;
}

/** The Backend plus what only WebGPU has: its runtime (for tests and benchmarks) and destroy. */
export interface WebGpuBackend extends Backend {
  readonly name: 'webgpu';
  readonly runtime: WebGpuRuntime;
  /** Releases the device; every later call throws. */
  destroy(): void;
}

/** A kernel's arguments for an error message: storages as dtype[numel], views as dtype[shape], then numbers and params. */
function describeArguments(args: readonly unknown[]): string {
  return args.map((arg) => {
    if (arg === null || typeof arg !== 'object') return String(arg);
    if ('storage' in arg && 'shape' in arg) return `${(arg as View).storage.dtype}[${(arg as View).shape.join(', ')}]`;
    if ('dtype' in arg && 'numel' in arg) return `${(arg as Storage).dtype}[${(arg as Storage).numel}]`;
    return Array.isArray(arg) ? `[${arg.join(', ')}]` : JSON.stringify(arg);
  }).join(', ');
}

/** The planners' binding-limit errors ("WebGPU: one row of … bytes exceeds …") come out naming the op and its operands. */
function naming<F extends (...args: never[]) => unknown>(op: string, kernel: F): F {
  return ((...args: Parameters<F>) => {
    try {
      return kernel(...args);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('WebGPU: ')) throw error;
      throw new Error(`WebGPU ${op}(${describeArguments(args)}): ${error.message.slice('WebGPU: '.length)}`, { cause: error });
    }
  }) as F;
}

/** The kernels whose work is split to fit the binding limit (everything that records dispatches). */
const SPLIT_KERNELS = [
  'full', 'copy', 'assign', 'unary', 'binary', 'reduce', 'matmul', 'softmax', 'softmaxBackward', 'embedding',
  'embeddingBackward', 'rmsNorm', 'rmsNormBackward', 'rope', 'attention', 'attentionBackward', 'topkMask', 'maskedMatmul',
  'maskedMatmulBackward', 'rowDot', 'rowDotBackward', 'addOuter', 'addOuterBackward', 'swiglu', 'swigluBackward',
  'crossEntropy', 'crossEntropyBackward', 'klDiv', 'klDivBackward', 'adamwStep',
] as const satisfies readonly (keyof Backend)[];

export function buildWebGpuBackend(rt: WebGpuRuntime, description: string): WebGpuBackend {
  const backend: WebGpuBackend = {
    name: 'webgpu',
    description,
    runtime: rt,
    destroy: () => rt.destroy(),

    upload: (data, dtype) => upload(rt, data, dtype),
    // Data goes to the device either way; the host array is free after the call.
    adopt: (data, dtype) => upload(rt, data, dtype),
    full: (numel, value, dtype) => full(rt, numel, value, dtype),
    read: (view) => read(rt, view),
    readRaw: (storage) => readRaw(rt, storage),
    free: (storage: Storage) => rt.free(storage),
    sync: () => rt.sync(),
    memory: () => rt.memory(),
    resetPeak: () => rt.resetPeak(),

    copy: (x, dtype) => copyView(rt, x, dtype),
    assign: (dst, src) => assign(rt, dst, src),
    unary: (op, x, param) => unary(rt, op, x, param),
    binary: (op, a, b, outShape) => binary(rt, op, a, b, outShape),

    reduce: (op, x, outer, size, inner) => reduce(rt, op, x, outer, size, inner),
    matmul: (a, aOffset, b, bOffset, p) => matmul(rt, a, aOffset, b, bOffset, p),
    softmax: (x, rows, cols, log) => softmax(rt, x, rows, cols, log),
    softmaxBackward: (y, dy, rows, cols, log) => softmaxBackward(rt, y, dy, rows, cols, log),
    embedding: (table, ids, vocab, hidden) => embedding(rt, table, ids, vocab, hidden),
    embeddingBackward: (dy, ids, vocab, hidden) => embeddingBackward(rt, dy, ids, vocab, hidden),
    rmsNorm: (x, weight, rows, hidden, eps) => rmsNorm(rt, x, weight, rows, hidden, eps),
    rmsNormBackward: (dy, x, weight, rstd, rows, hidden) => rmsNormBackward(rt, dy, x, weight, rstd, rows, hidden),
    rope: (x, cos, sin, batch, tokens, heads, headDim, inverse) => rope(rt, x, cos, sin, batch, tokens, heads, headDim, inverse),
    attention: (q, k, v, p) => attention(rt, q, k, v, p),
    attentionBackward: (q, k, v, out, lse, dout, p) => attentionBackward(rt, q, k, v, out, lse, dout, p),
    topkMask: (values, groups, size, count) => topkMask(rt, values, groups, size, count),
    maskedMatmul: (a, mask, w, rows, inner, cols) => maskedMatmul(rt, a, mask, w, rows, inner, cols),
    maskedMatmulBackward: (a, mask, w, dy, rows, inner, cols) => maskedMatmulBackward(rt, a, mask, w, dy, rows, inner, cols),
    rowDot: (x, a, rows, cols) => rowDot(rt, x, a, rows, cols),
    rowDotBackward: (x, a, du, rows, cols) => rowDotBackward(rt, x, a, du, rows, cols),
    addOuter: (base, u, v, rows, cols) => addOuter(rt, base, u, v, rows, cols),
    addOuterBackward: (dy, u, v, rows, cols) => addOuterBackward(rt, dy, u, v, rows, cols),
    swiglu: (gate, up, n) => swiglu(rt, gate, up, n),
    swigluBackward: (gate, up, dy, n) => swigluBackward(rt, gate, up, dy, n),
    crossEntropy: (logits, targets, mask, rows, vocab) => crossEntropy(rt, logits, targets, mask, rows, vocab),
    crossEntropyBackward: (logits, targets, dRow, rows, vocab) => crossEntropyBackward(rt, logits, targets, dRow, rows, vocab),
    klDiv: (p, q, rows, vocab) => klDiv(rt, p, q, rows, vocab),
    klDivBackward: (p, q, dRow, rows, vocab) => klDivBackward(rt, p, q, dRow, rows, vocab),
    adamwStep: (param, grad, m, v, n, p) => adamwStep(rt, param, grad, m, v, n, p),
  };
  for (const op of SPLIT_KERNELS) Object.assign(backend, { [op]: naming(op, backend[op] as (...args: never[]) => unknown) });
  return backend;
}

/** A WebGPU backend, or why there is none ("no WebGPU adapter: ..."). */
export async function probeWebGpu(options: WebGpuBackendOptions = {}): Promise<{ backend: WebGpuBackend } | { reason: string }> {
  const acquired = await acquireDevice(options.adapter, options.gpu ?? null);
  if ('reason' in acquired) return acquired;
  try {
    return { backend: buildWebGpuBackend(new WebGpuRuntime(acquired, options), describeDevice(acquired)) };
  } catch (error) {
    acquired.device.destroy();
    return { reason: `WebGPU device setup failed: ${(error as Error).message}` };
  }
}
