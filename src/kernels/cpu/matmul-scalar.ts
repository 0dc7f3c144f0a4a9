// Plain TypeScript matmul: the path for problems too small to pay for copying into the wasm memory and
// waking threads, and the whole path where WebAssembly SIMD does not validate. Same contract as matmulInto.

import type { MatmulParams } from '../backend.ts';
import { f16ToF32 } from '../dtype.ts';

/** Columns of B widened per block: bounds the scratch (COLUMN_BLOCK * K f32) for any size of B. */
const COLUMN_BLOCK = 64;

let f16Table: Float32Array | null = null;

/** Every f16 bit pattern's value, so widening is one lookup. */
export function f16ValueTable(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) f16Table[bits] = f16ToF32(bits);
  }
  return f16Table;
}

/**
 * out[batch, m, n] = op(a) @ op(b). Works on a block of COLUMN_BLOCK columns of op(b) at a time, widened
 * and laid out [column][K] so every output is a dot product of two contiguous rows.
 */
export function matmulScalarInto(
  a: Float32Array, aOffset: number,
  b: Float32Array | Uint16Array, bDtype: 'f32' | 'f16' | 'bf16', bOffset: number,
  out: Float32Array, p: MatmulParams,
): void {
  const { batch, m, n, k, transA, transB, aBatchStride, bBatchStride } = p;
  const columns = new Float32Array(Math.min(COLUMN_BLOCK, n) * k);
  const columnBits = new Uint32Array(columns.buffer);
  const aRow = new Float32Array(k);
  const table = bDtype === 'f16' ? f16ValueTable() : null;
  for (let bi = 0; bi < batch; bi++) {
    const aBase = aOffset + bi * aBatchStride;
    const bBase = bOffset + bi * bBatchStride;
    const cBase = bi * m * n;
    for (let j0 = 0; j0 < n; j0 += COLUMN_BLOCK) {
      const width = Math.min(COLUMN_BLOCK, n - j0);
      for (let jj = 0; jj < width; jj++) {
        // Element q of column j of op(b): b[j, q] when transposed ([n, k]), else b[q, j].
        const start = transB ? bBase + (j0 + jj) * k : bBase + j0 + jj;
        const step = transB ? 1 : n;
        const row = jj * k;
        if (bDtype === 'f32') {
          for (let q = 0; q < k; q++) columns[row + q] = b[start + q * step]!;
        } else if (bDtype === 'bf16') {
          for (let q = 0; q < k; q++) columnBits[row + q] = b[start + q * step]! << 16;
        } else {
          for (let q = 0; q < k; q++) columns[row + q] = table![b[start + q * step]!]!;
        }
      }
      for (let i = 0; i < m; i++) {
        let aStart = aBase + i * k;
        let aData = a;
        if (transA) {
          for (let q = 0; q < k; q++) aRow[q] = a[aBase + q * m + i]!;
          aStart = 0;
          aData = aRow;
        }
        const outRow = cBase + i * n + j0;
        // Four columns per pass share each load of a (four independent sums also hide add latency).
        let jj = 0;
        for (; jj + 4 <= width; jj += 4) {
          const r0 = jj * k;
          const r1 = r0 + k;
          const r2 = r1 + k;
          const r3 = r2 + k;
          let s0 = 0;
          let s1 = 0;
          let s2 = 0;
          let s3 = 0;
          for (let q = 0; q < k; q++) {
            const av = aData[aStart + q]!;
            s0 += av * columns[r0 + q]!;
            s1 += av * columns[r1 + q]!;
            s2 += av * columns[r2 + q]!;
            s3 += av * columns[r3 + q]!;
          }
          out[outRow + jj] = s0;
          out[outRow + jj + 1] = s1;
          out[outRow + jj + 2] = s2;
          out[outRow + jj + 3] = s3;
        }
        for (; jj < width; jj++) {
          const row = jj * k;
          let sum = 0;
          for (let q = 0; q < k; q++) sum += aData[aStart + q]! * columns[row + q]!;
          out[outRow + jj] = sum;
        }
      }
    }
  }
}
