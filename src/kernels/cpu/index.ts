// The CPU backend: plain TypeScript kernels (the readable reference every other backend is tested against)
// plus a blocked, multi-threaded WebAssembly SIMD matmul (matmul.ts; matmul-scalar.ts is its plain fallback).
import type { Backend, DType, MatmulParams, MemoryStats, Storage, View } from '../backend.ts';
import { BYTES_PER_ELEMENT } from '../backend.ts';
import { f32ToBf16, f32ToF16 } from '../dtype.ts';
import { CpuStorage, allocateArray, cpuStorage, f32Of, stridedIndices } from './storage.ts';
import { assign, copy } from './copy.ts';
import { binary, unary } from './elementwise.ts';
import { reduce } from './reduce.ts';
import { softmax, softmaxBackward } from './softmax.ts';
import { embedding, embeddingBackward } from './embedding.ts';
import { rmsNorm, rmsNormBackward } from './rmsnorm.ts';
import { rope } from './rope.ts';
import { attention, attentionBackward } from './attention.ts';
import { swiglu, swigluBackward } from './swiglu.ts';
import { addOuter, addOuterBackward, rowDot, rowDotBackward } from './outer.ts';
import { topkMask } from './select.ts';
import { maskedMatmul, maskedMatmulBackward } from './sparse.ts';
import { crossEntropy, crossEntropyBackward, crossEntropyWithGrad, klDiv, klDivBackward } from './loss.ts';
import { adamwStep } from './optimizer.ts';
import { matmulDescription, matmulInto } from './matmul.ts';
import { allocateF32Overwritten, pooledF32Bytes, releaseF32 } from './array-pool.ts';

export function createCpuBackend(): Backend {
  let liveBytes = 0;
  let peakBytes = 0;
  let liveStorages = 0;

  /** Every storage the backend hands out passes through here, so memory() is exact. */
  function track<S extends Storage>(storage: S): S {
    liveBytes += storage.numel * BYTES_PER_ELEMENT[storage.dtype];
    liveStorages++;
    if (liveBytes > peakBytes) peakBytes = liveBytes;
    return storage;
  }
  const tracked = <T extends Record<string, Storage>>(result: T): T => {
    for (const s of Object.values(result)) track(s);
    return result;
  };

  const backend: Backend = {
    name: 'cpu',
    get description() {
      return `cpu (${matmulDescription()})`;
    },

    upload(data, dtype) {
      return backend.adopt(data.slice(), dtype);
    },
    adopt(data, dtype) {
      const expected = dtype === 'f32' ? Float32Array : dtype === 'i32' ? Int32Array : Uint16Array;
      if (!(data instanceof expected)) {
        throw new Error(`upload: ${dtype} data must be a ${expected.name}, got ${data.constructor.name}`);
      }
      return track(new CpuStorage(dtype, data));
    },
    full(numel, value, dtype) {
      const data = allocateArray(dtype, numel);
      if (value !== 0) {
        const bits = dtype === 'bf16' ? f32ToBf16(value) : dtype === 'f16' ? f32ToF16(value) : dtype === 'i32' ? Math.trunc(value) : value;
        data.fill(bits);
      }
      return track(new CpuStorage(dtype, data));
    },
    async read(view: View) {
      const s = cpuStorage(view.storage, 'read');
      if (s.dtype === 'i32') return Int32Array.from(stridedIndices(view), (i) => s.data[i]!);
      return (copy(view, 'f32') as CpuStorage).data as Float32Array;
    },
    async readRaw(storage) {
      return cpuStorage(storage, 'readRaw').data.slice();
    },
    free(storage) {
      const s = cpuStorage(storage, 'free');
      s.freed = true;
      liveBytes -= s.numel * BYTES_PER_ELEMENT[s.dtype];
      liveStorages--;
      if (s.data instanceof Float32Array) releaseF32(s.data);
    },
    async sync() {},
    memory(): MemoryStats {
      return { liveBytes, peakBytes, pooledBytes: pooledF32Bytes(), liveStorages };
    },
    resetPeak() {
      peakBytes = liveBytes;
    },

    copy: (x, dtype: DType) => track(copy(x, dtype)),
    assign,
    unary: (op, x, param) => track(unary(op, x, param)),
    binary: (op, a, b, outShape) => track(binary(op, a, b, outShape)),
    reduce: (op, x, outer, size, inner) => track(reduce(op, x, outer, size, inner)),

    matmul(a: Storage, aOffset: number, b: Storage, bOffset: number, p: MatmulParams) {
      const left = f32Of(a, 'matmul a');
      const right = cpuStorage(b, 'matmul b');
      if (right.dtype === 'i32') throw new Error('matmul: b must be a float storage, got i32');
      const out = allocateF32Overwritten(p.batch * p.m * p.n); // matmulInto writes every element, k = 0 included
      matmulInto(left, aOffset, right.data as Float32Array | Uint16Array, right.dtype, bOffset, out, p);
      return track(new CpuStorage('f32', out));
    },

    softmax: (x, rows, cols, log) => track(softmax(x, rows, cols, log)),
    softmaxBackward: (y, dy, rows, cols, log) => track(softmaxBackward(y, dy, rows, cols, log)),
    embedding: (table, ids, vocab, hidden) => track(embedding(table, ids, vocab, hidden)),
    embeddingBackward: (dy, ids, vocab, hidden) => track(embeddingBackward(dy, ids, vocab, hidden)),
    rmsNorm: (x, w, rows, hidden, eps) => tracked(rmsNorm(x, w, rows, hidden, eps)),
    rmsNormBackward: (dy, x, w, rstd, rows, hidden) => tracked(rmsNormBackward(dy, x, w, rstd, rows, hidden)),
    rope: (x, cos, sin, batch, tokens, heads, headDim, inverse) =>
      track(rope(x, cos, sin, batch, tokens, heads, headDim, inverse)),
    attention: (q, k, v, p) => tracked(attention(q, k, v, p)),
    attentionBackward: (q, k, v, out, lse, dout, p) => tracked(attentionBackward(q, k, v, out, lse, dout, p)),
    rowDot: (x, a, rows, cols) => track(rowDot(x, a, rows, cols)),
    rowDotBackward: (x, a, du, rows, cols) => tracked(rowDotBackward(x, a, du, rows, cols)),
    addOuter: (base, u, v, rows, cols) => track(addOuter(base, u, v, rows, cols)),
    addOuterBackward: (dy, u, v, rows, cols) => tracked(addOuterBackward(dy, u, v, rows, cols)),
    topkMask: (values, groups, size, count) => track(topkMask(values, groups, size, count)),
    maskedMatmul: (a, mask, w, rows, inner, cols) => track(maskedMatmul(a, mask, w, rows, inner, cols)),
    maskedMatmulBackward: (a, mask, w, dy, rows, inner, cols) => tracked(maskedMatmulBackward(a, mask, w, dy, rows, inner, cols)),
    swiglu: (gate, up, n) => track(swiglu(gate, up, n)),
    swigluBackward: (gate, up, dy, n) => tracked(swigluBackward(gate, up, dy, n)),
    crossEntropy: (logits, targets, mask, rows, vocab) => track(crossEntropy(logits, targets, mask, rows, vocab)),
    crossEntropyBackward: (logits, targets, dRow, rows, vocab) =>
      track(crossEntropyBackward(logits, targets, dRow, rows, vocab)),
    crossEntropyWithGrad: (logits, targets, mask, rows, vocab) => tracked(crossEntropyWithGrad(logits, targets, mask, rows, vocab)),
    klDiv: (p, q, rows, vocab) => track(klDiv(p, q, rows, vocab)),
    klDivBackward: (p, q, dRow, rows, vocab) => tracked(klDivBackward(p, q, dRow, rows, vocab)),
    adamwStep,
  };
  return backend;
}

