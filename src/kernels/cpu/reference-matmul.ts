import type { MatmulParams } from '../backend.ts';
import { bf16ToF32, f16ToF32 } from '../../tensor/dtype.ts';

/** Plain-loop matmul, the readable reference: out[batch, m, n] = op(a) @ op(b). */
export function referenceMatmulInto(
  a: Float32Array, aOffset: number,
  b: Float32Array | Uint16Array, bDtype: 'f32' | 'f16' | 'bf16', bOffset: number,
  out: Float32Array, p: MatmulParams,
): void {
  const { batch, m, n, k, transA, transB } = p;
  const readB = bDtype === 'bf16' ? (i: number) => bf16ToF32(b[i]!) : bDtype === 'f16' ? (i: number) => f16ToF32(b[i]!) : (i: number) => b[i]!;
  for (let z = 0; z < batch; z++) {
    const aBase = aOffset + z * p.aBatchStride;
    const bBase = bOffset + z * p.bBatchStride;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let t = 0; t < k; t++) {
          const av = a[aBase + (transA ? t * m + i : i * k + t)]!;
          const bv = readB(bBase + (transB ? j * k + t : t * n + j));
          acc += av * bv;
        }
        out[z * m * n + i * n + j] = acc;
      }
    }
  }
}
