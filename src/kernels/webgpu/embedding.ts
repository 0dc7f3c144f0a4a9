// embedding: table [V, H] (f32/f16/bf16, read packed), ids i32 [N] -> out [N, H] f32; ids outside [0, V) read zeros.
// embeddingBackward: dy [N, H], ids [N] -> dtable [V, H] f32, scatter-add without atomics:
//   1. links: for each n, whether it is the first occurrence of its id and the next n' with the same id;
//   2. each (first occurrence n, column h) thread walks its chain adding dy[n', h] in ascending n' and
//      writes dtable[id, h] once. The order of additions is the CPU's, so results match bit for bit.
// A table above the binding limit is processed in pieces of vocab rows, each binding only its rows.

import type { Storage } from '../backend.ts';
import { full } from './memory.ts';
import { asWebGpuStorage, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { ENTRY_ARGS, PRELUDE, loadFn, params, storageDecl } from './wgsl.ts';
import type { DType } from '../backend.ts';

const WORKGROUP = 256;
const NO_NEXT = 0xffffffff;

const gatherParams = params({
  rows: 'u32', hidden: 'u32', vocabStart: 'u32', vocabEnd: 'u32', writeMisses: 'u32',
  tableOffset: 'u32', idsOffset: 'u32', outOffset: 'u32',
});

// ids [rows], table rows [vocabStart, vocabEnd) -> out [rows, H]
function gatherSource(tableDtype: DType): string {
  return PRELUDE + gatherParams.wgsl() + storageDecl(1, 'table', tableDtype, 'read') + storageDecl(2, 'ids', 'i32', 'read')
    + storageDecl(3, 'out', 'f32', 'write') + loadFn('table', tableDtype) + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let i = workgroup_index(wg, groups) * ${WORKGROUP}u + lid;
  if (i >= params.rows * params.hidden) { return; }
  let n = i / params.hidden;
  let h = i % params.hidden;
  let id = ids[params.idsOffset + n];
  let inPiece = id >= i32(params.vocabStart) && id < i32(params.vocabEnd);
  if (inPiece) {
    out[params.outOffset + i] = load_table(params.tableOffset + (u32(id) - params.vocabStart) * params.hidden + h);
  } else if (params.writeMisses != 0u) {
    out[params.outOffset + i] = 0.0; // a later piece may still own this id and overwrite it
  }
}
`;
}

const linkParams = params({ count: 'u32', vocab: 'u32' });

// ids [N] -> links [2N]: links[n] = next n' > n with ids[n'] == ids[n] (or NO_NEXT); links[N + n] = 1 if n is the first
const LINKS_SOURCE = PRELUDE + linkParams.wgsl() + storageDecl(1, 'ids', 'i32', 'read') + storageDecl(2, 'links', 'i32', 'write') + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let n = workgroup_index(wg, groups) * ${WORKGROUP}u + lid;
  if (n >= params.count) { return; }
  let id = ids[n];
  var first = 1;
  for (var m = 0u; m < n; m = m + 1u) {
    if (ids[m] == id) { first = 0; break; }
  }
  var next = ${NO_NEXT}u;
  for (var m = n + 1u; m < params.count; m = m + 1u) {
    if (ids[m] == id) { next = m; break; }
  }
  links[n] = bitcast<i32>(next);
  links[params.count + n] = select(0, first, id >= 0 && id < i32(params.vocab));
}
`;

const scatterParams = params({ count: 'u32', hidden: 'u32', vocabStart: 'u32', vocabEnd: 'u32', dtableOffset: 'u32' });

// dy [N, H], ids [N], links [2N] -> dtable rows [vocabStart, vocabEnd)
const SCATTER_SOURCE = PRELUDE + scatterParams.wgsl() + storageDecl(1, 'dy', 'f32', 'read') + storageDecl(2, 'ids', 'i32', 'read')
  + storageDecl(3, 'links', 'i32', 'read') + storageDecl(4, 'dtable', 'f32', 'write') + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let i = workgroup_index(wg, groups) * ${WORKGROUP}u + lid;
  if (i >= params.count * params.hidden) { return; }
  let n = i / params.hidden;
  let h = i % params.hidden;
  if (links[params.count + n] == 0) { return; }
  let id = ids[n];
  if (id < i32(params.vocabStart) || id >= i32(params.vocabEnd)) { return; }
  var acc = 0.0;
  var m = n;
  loop {
    acc = acc + dy[m * params.hidden + h];
    let next = bitcast<u32>(links[m]);
    if (next == ${NO_NEXT}u) { break; }
    m = next;
  }
  dtable[params.dtableOffset + (u32(id) - params.vocabStart) * params.hidden + h] = acc;
}
`;

/** Vocab row ranges [v0, v1) whose rows of `storage` fit one binding each. */
function vocabPieces(rt: WebGpuRuntime, storage: WebGpuStorage, vocab: number, hidden: number): Array<[number, number]> {
  const chunks = rt.rowChunks(vocab, [{ storage, rowStride: hidden }]);
  return chunks.map((chunk) => [chunk.row0, chunk.row0 + chunk.rows]);
}

export function embedding(rt: WebGpuRuntime, tableStorage: Storage, idsStorage: Storage, vocab: number, hidden: number): WebGpuStorage {
  const table = asWebGpuStorage(tableStorage);
  const ids = asWebGpuStorage(idsStorage);
  const count = ids.numel;
  const out = rt.allocate('f32', count * hidden);
  if (count === 0) return out;
  const kernel = rt.kernel(`embedding.${table.dtype}`, () => ({ code: gatherSource(table.dtype), bindings: ['read', 'read', 'write'] }));
  const pieces = vocabPieces(rt, table, vocab, hidden);
  for (const chunk of rt.rowChunks(count, [{ storage: ids, rowStride: 1 }, { storage: out, rowStride: hidden }])) {
    const [idsOffset, outOffset] = chunk.offsets as [number, number];
    pieces.forEach(([vocabStart, vocabEnd], p) => {
      const bound = rt.bindRange(table, vocabStart * hidden, vocabEnd * hidden);
      const packed = gatherParams.pack({
        rows: chunk.rows, hidden, vocabStart, vocabEnd, writeMisses: p === 0 ? 1 : 0,
        tableOffset: vocabStart * hidden - bound.base, idsOffset, outOffset,
      });
      rt.dispatch(kernel, packed, [bound.binding, ...chunk.bindings], Math.ceil((chunk.rows * hidden) / WORKGROUP));
    });
  }
  return out;
}

export function embeddingBackward(rt: WebGpuRuntime, dyStorage: Storage, idsStorage: Storage, vocab: number, hidden: number): WebGpuStorage {
  const dy = asWebGpuStorage(dyStorage);
  const ids = asWebGpuStorage(idsStorage);
  const count = ids.numel;
  if (count === 0) return full(rt, vocab * hidden, 0, 'f32');
  // Every dispatch reads all of dy, ids and the links: check they fit one binding before allocating.
  const shared = [rt.bindWhole(dy, 'embeddingBackward dy'), rt.bindWhole(ids, 'embeddingBackward ids')];
  const dtable = full(rt, vocab * hidden, 0, 'f32');
  const links = rt.allocate('i32', 2 * count);
  const linksKernel = rt.kernel('embeddingBackward.links', () => ({ code: LINKS_SOURCE, bindings: ['read', 'write'] }));
  const linksBinding = rt.bindWhole(links, 'embeddingBackward links');
  rt.dispatch(linksKernel, linkParams.pack({ count, vocab }), [shared[1]!, linksBinding], Math.ceil(count / WORKGROUP));
  const scatterKernel = rt.kernel('embeddingBackward.scatter', () => ({
    code: SCATTER_SOURCE, bindings: ['read', 'read', 'read', 'write'],
  }));
  shared.push(linksBinding);
  for (const [vocabStart, vocabEnd] of vocabPieces(rt, dtable, vocab, hidden)) {
    const bound = rt.bindRange(dtable, vocabStart * hidden, vocabEnd * hidden);
    const packed = scatterParams.pack({ count, hidden, vocabStart, vocabEnd, dtableOffset: vocabStart * hidden - bound.base });
    rt.dispatch(scatterKernel, packed, [...shared, bound.binding], Math.ceil((count * hidden) / WORKGROUP));
  }
  rt.free(links);
  return dtable;
}
