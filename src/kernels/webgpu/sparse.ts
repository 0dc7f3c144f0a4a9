// maskedMatmul on WebGPU: (a ⊙ mask) w as the elementwise product then the tiled matmul, and its backward as
// (dy wᵀ) ⊙ mask and (a ⊙ mask)ᵀ dy. A GPU runs the dense product at full width, so the composition is the
// right kernel here; the CPU backend's gather form (../cpu/sparse.ts) is what saves work on a CPU.
//   a [R, K], mask [R, K], w [K, N] -> y [R, N];  dy [R, N] -> da [R, K], dw [K, N]
import type { MatmulParams, Storage, View } from '../backend.ts';
import { binary } from './elementwise.ts';
import { matmul } from './matmul.ts';
import type { WebGpuRuntime } from './runtime.ts';

const whole = (storage: Storage, rows: number, cols: number): View => ({ storage, shape: [rows, cols], strides: [cols, 1], offset: 0 });

const plain = (m: number, n: number, k: number, transA: boolean, transB: boolean): MatmulParams => ({
  batch: 1, m, n, k, transA, transB, aBatchStride: 0, bBatchStride: 0,
});

export function maskedMatmul(rt: WebGpuRuntime, a: Storage, mask: Storage, w: Storage, rows: number, inner: number, cols: number): Storage {
  const masked = binary(rt, 'mul', whole(a, rows, inner), whole(mask, rows, inner), [rows, inner]);
  const out = matmul(rt, masked, 0, w, 0, plain(rows, cols, inner, false, false));
  rt.free(masked);
  return out;
}

export function maskedMatmulBackward(
  rt: WebGpuRuntime, a: Storage, mask: Storage, w: Storage, dy: Storage, rows: number, inner: number, cols: number,
): { da: Storage; dw: Storage } {
  const dense = matmul(rt, dy, 0, w, 0, plain(rows, inner, cols, false, true)); // dy wᵀ [R, K]
  const da = binary(rt, 'mul', whole(dense, rows, inner), whole(mask, rows, inner), [rows, inner]);
  rt.free(dense);
  const masked = binary(rt, 'mul', whole(a, rows, inner), whole(mask, rows, inner), [rows, inner]);
  const dw = matmul(rt, masked, 0, dy, 0, plain(inner, cols, rows, true, false)); // (a ⊙ mask)ᵀ dy [K, N]
  rt.free(masked);
  return { da, dw };
}
