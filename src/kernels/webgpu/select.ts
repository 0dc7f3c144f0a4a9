// Top-k selection as a 0/1 mask (see src/kernels/cpu/select.ts for the contract): values [G, N] -> mask [G, N],
// 1 at the `count` largest of each group, ties to the lower index, exactly min(count, N) ones per group.
//
// One workgroup per group, a radix select on sortable keys: each float maps to a u32 whose order is the
// float's (NaN lowest), and four passes of a 256-bin histogram over the next 8 bits of the keys that share the
// prefix found so far narrow down to the exact key T of rank count-1 and how many keys equal to T are to be
// taken. The mask pass then writes key > T, and key == T for the first `tiesToTake` ties in index order (a
// workgroup prefix sum per chunk of 256; skipped when every tie is taken, the usual case for real values).

import type { Storage } from '../backend.ts';
import { full } from './memory.ts';
import { asWebGpuStorage, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { ENTRY_ARGS, PRELUDE, params, storageDecl } from './wgsl.ts';

const WORKGROUP = 256;

const selectParams = params({ groups: 'u32', size: 'u32', take: 'u32', offset1: 'u32', offset2: 'u32' });

// values [G, N] -> mask [G, N]
const TOPK_MASK_SOURCE = PRELUDE + selectParams.wgsl() + storageDecl(1, 'values', 'f32', 'read')
  + storageDecl(2, 'mask', 'f32', 'write') + /* wgsl */ `
var<workgroup> histogram: array<atomic<u32>, 256>;
var<workgroup> prefix: u32;
var<workgroup> remaining: u32;
var<workgroup> ties_in_bin: u32;
var<workgroup> scan: array<u32, ${WORKGROUP}>;
var<workgroup> ties_before: u32;

// Sortable key: larger float, larger key; NaN below every number; -0 and +0 equal (as the CPU compares them).
// Tested on the bits: a shader compiler may assume floats are never NaN and fold v != v away.
fn sort_key(v: f32) -> u32 {
  let bits = bitcast<u32>(v);
  let magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) { return 0u; }
  if (magnitude == 0u) { return 0x80000000u; }
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let group = workgroup_index(wg, groups);
  if (group >= params.groups) { return; }
  let base = group * params.size;
  if (lid == 0u) { prefix = 0u; remaining = params.take; }
  var prefix_mask = 0u;
  for (var round = 0u; round < 4u; round = round + 1u) {
    let shift = 24u - 8u * round;
    atomicStore(&histogram[lid], 0u);
    workgroupBarrier();
    let want = workgroupUniformLoad(&prefix);
    for (var i = lid; i < params.size; i = i + ${WORKGROUP}u) {
      let key = sort_key(values[params.offset1 + base + i]);
      if ((key & prefix_mask) == want) { atomicAdd(&histogram[(key >> shift) & 255u], 1u); }
    }
    workgroupBarrier();
    if (lid == 0u) {
      // From the top bin down: the bin holding the remaining-th largest key of this prefix.
      var above = 0u;
      var bin = 255i;
      loop {
        let count = atomicLoad(&histogram[u32(bin)]);
        if (above + count >= remaining || bin == 0i) {
          remaining = remaining - above;
          ties_in_bin = count;
          prefix = prefix | (u32(bin) << shift);
          break;
        }
        above = above + count;
        bin = bin - 1i;
      }
    }
    prefix_mask = prefix_mask | (255u << shift);
    workgroupBarrier();
  }
  let threshold = workgroupUniformLoad(&prefix);
  let ties_to_take = workgroupUniformLoad(&remaining);
  let all_ties = workgroupUniformLoad(&ties_in_bin) == ties_to_take;
  if (all_ties) {
    for (var i = lid; i < params.size; i = i + ${WORKGROUP}u) {
      mask[params.offset2 + base + i] = select(0.0, 1.0, sort_key(values[params.offset1 + base + i]) >= threshold);
    }
    return;
  }
  if (lid == 0u) { ties_before = 0u; }
  for (var start = 0u; start < params.size; start = start + ${WORKGROUP}u) {
    let i = start + lid;
    var key = 0u;
    var is_tie = 0u;
    if (i < params.size) {
      key = sort_key(values[params.offset1 + base + i]);
      is_tie = select(0u, 1u, key == threshold);
    }
    // Inclusive prefix sum of is_tie over the chunk (Hillis-Steele).
    scan[lid] = is_tie;
    workgroupBarrier();
    for (var stride = 1u; stride < ${WORKGROUP}u; stride = stride << 1u) {
      var add = 0u;
      if (lid >= stride) { add = scan[lid - stride]; }
      workgroupBarrier();
      scan[lid] = scan[lid] + add;
      workgroupBarrier();
    }
    let carried = workgroupUniformLoad(&ties_before);
    if (i < params.size) {
      let rank_among_ties = carried + scan[lid] - is_tie;
      let keep = key > threshold || (is_tie == 1u && rank_among_ties < ties_to_take);
      mask[params.offset2 + base + i] = select(0.0, 1.0, keep);
    }
    workgroupBarrier();
    if (lid == ${WORKGROUP - 1}u) { ties_before = carried + scan[lid]; }
    workgroupBarrier();
  }
}
`;

// values [G, N] -> mask [G, N]
export function topkMask(rt: WebGpuRuntime, values: Storage, groups: number, size: number, count: number): WebGpuStorage {
  const take = Math.min(Math.max(count, 0), size);
  if (groups * size === 0 || take === 0 || take === size) return full(rt, groups * size, take === 0 ? 0 : 1, 'f32');
  const mask = rt.allocate('f32', groups * size);
  const kernel = rt.kernel('topkMask', () => ({ code: TOPK_MASK_SOURCE, bindings: ['read', 'write'] }));
  for (const chunk of rt.rowChunks(groups, [{ storage: asWebGpuStorage(values), rowStride: size }, { storage: mask, rowStride: size }])) {
    const [offset1 = 0, offset2 = 0] = chunk.offsets;
    rt.dispatch(kernel, selectParams.pack({ groups: chunk.rows, size, take, offset1, offset2 }), chunk.bindings, chunk.rows);
  }
  return mask;
}
