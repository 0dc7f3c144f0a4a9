// rope: x [B, T, nh, hd], cos/sin [T, hd/2] -> y [B, T, nh, hd] (Qwen/HF rotate-half):
//   y[i] = x[i] cos - x[i + hd/2] sin,  y[i + hd/2] = x[i + hd/2] cos + x[i] sin;  inverse negates sin.
// One thread per rotated pair (b, t, h, i < hd/2).

import type { Storage } from '../backend.ts';
import { asWebGpuStorage, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { ENTRY_ARGS, PRELUDE, params, storageDecl } from './wgsl.ts';

const WORKGROUP = 256;

const ropeParams = params({
  rows: 'u32', row0: 'u32', tokens: 'u32', heads: 'u32', half: 'u32', sign: 'f32', xOffset: 'u32', yOffset: 'u32',
});

const SOURCE = PRELUDE + ropeParams.wgsl() + storageDecl(1, 'x', 'f32', 'read') + storageDecl(2, 'cos_table', 'f32', 'read')
  + storageDecl(3, 'sin_table', 'f32', 'read') + storageDecl(4, 'y', 'f32', 'write') + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let pair = workgroup_index(wg, groups) * ${WORKGROUP}u + lid;
  let pairsPerRow = params.heads * params.half;
  if (pair >= params.rows * pairsPerRow) { return; }
  let row = pair / pairsPerRow;             // row = b * T + t within this chunk
  let within = pair % pairsPerRow;
  let h = within / params.half;
  let i = within % params.half;
  let t = (params.row0 + row) % params.tokens;
  let c = cos_table[t * params.half + i];
  let s = params.sign * sin_table[t * params.half + i];
  let rowBase = row * params.heads * params.half * 2u + h * params.half * 2u;
  let x1 = x[params.xOffset + rowBase + i];
  let x2 = x[params.xOffset + rowBase + i + params.half];
  y[params.yOffset + rowBase + i] = x1 * c - x2 * s;
  y[params.yOffset + rowBase + i + params.half] = x2 * c + x1 * s;
}
`;

export function rope(
  rt: WebGpuRuntime, xStorage: Storage, cos: Storage, sin: Storage, batch: number, tokens: number, heads: number,
  headDim: number, inverse: boolean,
): WebGpuStorage {
  if (headDim % 2 !== 0) throw new Error(`rope: headDim must be even, got ${headDim}`);
  const x = asWebGpuStorage(xStorage);
  const y = rt.allocate('f32', batch * tokens * heads * headDim);
  const half = headDim / 2;
  const kernel = rt.kernel('rope', () => ({ code: SOURCE, bindings: ['read', 'read', 'read', 'write'] }));
  const rowElements = heads * headDim;
  const operands = [
    { storage: x, rowStride: rowElements },
    { storage: asWebGpuStorage(cos), rowStride: 0, rowLength: tokens * half },
    { storage: asWebGpuStorage(sin), rowStride: 0, rowLength: tokens * half },
    { storage: y, rowStride: rowElements },
  ];
  for (const chunk of rt.rowChunks(batch * tokens, operands)) {
    const packed = ropeParams.pack({
      rows: chunk.rows, row0: chunk.row0, tokens, heads, half, sign: inverse ? -1 : 1,
      xOffset: chunk.offsets[0]!, yOffset: chunk.offsets[3]!,
    });
    rt.dispatch(kernel, packed, chunk.bindings, Math.ceil((chunk.rows * heads * half) / WORKGROUP));
  }
  return y;
}
