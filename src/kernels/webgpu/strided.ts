// The strided elementwise map every layout and elementwise kernel is built on:
//   out[i] = body(in0[addr0(i)], in1[addr1(i)], ...) for i over an iteration shape (rank <= any, collapsed
//   first), each input an arbitrary strided view (stride 0 broadcasts), the output either a fresh
//   contiguous storage or, for `assign`, a strided view written in place.
// One thread per output element; for f16/bf16 outputs one thread per u32 word (two elements), so no two
// threads ever write halves of the same word. Work is cut into linear pieces when any operand is larger
// than the binding limit (see views.ts).

import type { DType, View } from '../backend.ts';
import { asWebGpuStorage, storageBytes, type KernelSource, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { collapseDims, contiguousStrides, linearSpan, planLinearPieces, product } from './views.ts';
import { ENTRY_ARGS, PRELUDE, loadFn, narrowExpr, params, storageDecl, type ParamLayout, type ParamType } from './wgsl.ts';

const WORKGROUP = 256;

export interface MapInput {
  view: View;
  /** Load raw bits (same-dtype copies) instead of the value widened to f32. */
  raw?: boolean;
}

export interface MapSpec {
  /** Identifies `body` in the pipeline cache, e.g. "unary.exp". */
  name: string;
  shape: readonly number[];
  inputs: readonly MapInput[];
  outDtype: DType;
  /** Write in place through this view (assign) instead of into a fresh contiguous storage. */
  outView?: View;
  /** `body` yields the output's raw type (f32 / i32 / u32 half bits) instead of an f32 value. */
  outRaw?: boolean;
  /** WGSL expression for one output element from the inputs' expressions; `params.scalar`, `params.bits` available. */
  body: (inputs: readonly string[]) => string;
  scalar?: number;
  bits?: number;
  /** Extra WGSL functions `body` calls. */
  helpers?: string;
}

interface StorageExtent {
  dtype: DType;
  numel: number;
  byteSize: number;
}

/**
 * A half output's two elements per word touch input elements too far apart for one binding (a transposed
 * gather from a storage above the binding limit): the caller gathers to f32 first, then narrows.
 */
export class PairSplitError extends Error {}

function rawType(dtype: DType): string {
  return dtype === 'f32' ? 'f32' : dtype === 'i32' ? 'i32' : 'u32';
}

function inputExpr(j: number, dtype: DType, raw: boolean, address: string): string {
  if (!raw) return `load_in${j}(${address})`;
  if (dtype === 'f16' || dtype === 'bf16') return `half_bits(in${j}[(${address}) >> 1u], ${address})`;
  return `in${j}[${address}]`;
}

/** Converts the body's value to what the output stores (a 16-bit pattern for halves). */
function storeExpr(dtype: DType, raw: boolean, value: string): string {
  if (raw) return value;
  if (dtype === 'i32') return `i32(${value})`;
  if (dtype === 'f16' || dtype === 'bf16') return narrowExpr(dtype, value);
  return value;
}

/** WGSL computing `address` = offset + sum(coord_d * stride_d) for view `v` from `linear`. */
function addressCode(rank: number, v: string): string {
  const terms = Array.from({ length: rank }, (_, d) => `c${d} * params.${v}s${d}`);
  return `params.${v}o + ${terms.join(' + ')}`;
}

function unravelCode(rank: number): string {
  if (rank === 1) return '  let c0 = linear;\n';
  let code = '  var rest = linear;\n';
  for (let d = rank - 1; d > 0; d--) code += `  let c${d} = rest % params.d${d}; rest = rest / params.d${d};\n`;
  return code + '  let c0 = rest;\n';
}

/** Uniforms: piece [start, end), thread count, output offset, scalars, shape, then each view's offset and strides. */
function mapParams(rank: number, inputCount: number, strided: boolean): ParamLayout<string> {
  const fields: Record<string, ParamType> = { start: 'u32', end: 'u32', count: 'u32', oo: 'u32', scalar: 'f32', bits: 'u32' };
  for (let d = 0; d < rank; d++) fields[`d${d}`] = 'u32';
  for (let j = 0; j < inputCount; j++) {
    fields[`i${j}o`] = 'u32';
    for (let d = 0; d < rank; d++) fields[`i${j}s${d}`] = 'u32';
  }
  if (strided) for (let d = 0; d < rank; d++) fields[`os${d}`] = 'u32';
  return params(fields);
}

function buildSource(
  spec: MapSpec, layout: ParamLayout<string>, rank: number, inputDtypes: readonly DType[], raws: readonly boolean[],
): KernelSource {
  const outHalf = spec.outDtype === 'f16' || spec.outDtype === 'bf16';
  const strided = spec.outView !== undefined;

  let code = PRELUDE + (spec.helpers ?? '') + layout.wgsl();
  inputDtypes.forEach((dtype, j) => {
    code += storageDecl(j + 1, `in${j}`, dtype, 'read');
    if (!raws[j]) code += loadFn(`in${j}`, dtype);
  });
  code += storageDecl(inputDtypes.length + 1, 'out', spec.outDtype, 'write');

  const valueType = spec.outRaw ? rawType(spec.outDtype) : 'f32';
  const inputs = inputDtypes.map((dtype, j) => inputExpr(j, dtype, raws[j]!, `a${j}`));
  code += `fn value_at(linear: u32) -> ${valueType} {\n${unravelCode(rank)}`;
  inputDtypes.forEach((_, j) => { code += `  let a${j} = ${addressCode(rank, `i${j}`)};\n`; });
  code += `  return ${spec.body(inputs)};\n}\n`;
  if (strided) code += `fn out_at(linear: u32) -> u32 {\n${unravelCode(rank)}  return ${addressCode(rank, 'o')};\n}\n`;

  const store = (value: string) => storeExpr(spec.outDtype, spec.outRaw ?? false, value);
  code += `@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let i = workgroup_index(wg, groups) * ${WORKGROUP}u + lid;
  if (i >= params.count) { return; }\n`;
  if (outHalf) {
    code += `  let linear = params.start + 2u * i;
  let low = ${store('value_at(linear)')};
  var high = 0u;
  if (linear + 1u < params.end) { high = ${store('value_at(linear + 1u)')}; }
  out[(params.oo + linear) >> 1u] = low | (high << 16u);\n}\n`;
  } else if (strided) {
    code += `  let linear = params.start + i;\n  out[out_at(linear)] = ${store('value_at(linear)')};\n}\n`;
  } else {
    code += `  let linear = params.start + i;\n  out[params.oo + linear] = ${store('value_at(linear)')};\n}\n`;
  }
  return { code, bindings: [...inputDtypes.map(() => 'read' as const), 'write' as const] };
}

/**
 * The contiguous-rows case (4-byte dtypes, a fresh output, every input's innermost axis contiguous and
 * vec4-aligned or broadcast, rows a multiple of 4 long unless rank 1): each thread maps 4 neighbouring
 * elements of one row with vec4 loads and one vec4 store. On CPU adapters a vec4 load costs about what a
 * scalar one does, so this is ~3x the throughput; GPUs like it too. `broadcast[j]`: input j's innermost
 * stride is 0 (one value for the 4 lanes).
 */
function vectorSource(
  spec: MapSpec, layout: ParamLayout<string>, rank: number, inputDtypes: readonly DType[], raws: readonly boolean[],
  broadcast: readonly boolean[],
): KernelSource {
  const vectorType = (dtype: DType) => (dtype === 'i32' ? 'vec4<i32>' : 'vec4<f32>');
  let code = PRELUDE + (spec.helpers ?? '') + layout.wgsl();
  inputDtypes.forEach((dtype, j) => {
    code += `@group(0) @binding(${j + 1}) var<storage, read> in${j}: array<${vectorType(dtype)}>;\n`;
    code += `fn address${j}(linear: u32) -> u32 {\n${unravelCode(rank)}  return ${addressCode(rank, `i${j}`)};\n}\n`;
  });
  code += `@group(0) @binding(${inputDtypes.length + 1}) var<storage, read_write> out: array<${vectorType(spec.outDtype)}>;\n`;

  const valueType = spec.outRaw ? rawType(spec.outDtype) : 'f32';
  const args = inputDtypes.map((dtype, j) => `x${j}: ${rawType(dtype)}`).join(', ');
  const values = inputDtypes.map((dtype, j) => (!raws[j] && dtype === 'i32' ? `f32(x${j})` : `x${j}`));
  code += `fn value_of(${args}) -> ${valueType} { return ${spec.body(values)}; }\n`;
  const store = (value: string) => storeExpr(spec.outDtype, spec.outRaw ?? false, value);
  const element = (j: number, at: string) => `in${j}[(${at}) >> 2u][(${at}) & 3u]`;

  let whole = '';
  inputDtypes.forEach((_, j) => {
    whole += `    let a${j} = address${j}(first);\n`;
    whole += broadcast[j] ? `    let w${j} = ${element(j, `a${j}`)};\n` : `    let w${j} = in${j}[a${j} >> 2u];\n`;
  });
  const lane = (c: string) => store(`value_of(${inputDtypes.map((_, j) => (broadcast[j] ? `w${j}` : `w${j}.${c}`)).join(', ')})`);
  whole += `    out[(params.oo + first) >> 2u] = ${vectorType(spec.outDtype)}(${['x', 'y', 'z', 'w'].map(lane).join(', ')});\n`;
  const tailArgs = inputDtypes.map((_, j) => element(j, `address${j}(e)`)).join(', ');

  code += `@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let i = workgroup_index(wg, groups) * ${WORKGROUP}u + lid;
  if (i >= params.count) { return; }
  let first = params.start + 4u * i;
  if (first + 4u <= params.end) {
${whole}  } else {
    for (var e = first; e < params.end; e = e + 1u) {
      let o = params.oo + e;
      out[o >> 2u][o & 3u] = ${store(`value_of(${tailArgs})`)};
    }
  }
}
`;
  return { code, bindings: [...inputDtypes.map(() => 'read' as const), 'write' as const] };
}

/** Runs `spec`; returns the fresh output storage, or null when it wrote through `spec.outView`. */
export function runStridedMap(rt: WebGpuRuntime, spec: MapSpec): WebGpuStorage | null {
  const total = product(spec.shape);
  const outHalf = spec.outDtype === 'f16' || spec.outDtype === 'bf16';
  if (spec.outView !== undefined && outHalf) throw new Error('internal: strided half outputs are not supported');
  const inputStorages = spec.inputs.map((input) => asWebGpuStorage(input.view.storage));
  const viewStrides = spec.inputs.map((input) => input.view.strides);
  if (spec.outView !== undefined) viewStrides.push(spec.outView.strides);
  // A contiguous output constrains no merge: the collapsed linear index is the same.
  const { shape, strides } = collapseDims(spec.shape, viewStrides);
  const rank = shape.length;
  const inputDtypes = inputStorages.map((s) => s.dtype);
  const raws = spec.inputs.map((input) => input.raw ?? false);

  const offsets = spec.inputs.map((input) => input.view.offset);
  const fourBytes = (dtype: DType) => dtype === 'f32' || dtype === 'i32';
  const inner = rank - 1;
  const broadcast = strides.slice(0, inputDtypes.length).map((s) => s[inner] === 0);
  const vectorized = spec.outView === undefined && fourBytes(spec.outDtype) && inputDtypes.every(fourBytes)
    && (rank === 1 || shape[inner]! % 4 === 0)
    && strides.every((s, j) => s[inner] === 0 || (s[inner] === 1 && offsets[j]! % 4 === 0 && s.every((stride, d) => d === inner || stride % 4 === 0)));

  const key = `map:${spec.name}:r${rank}:${inputDtypes.map((d, j) => d + (raws[j] ? 'r' : '')).join(',')}`
    + `->${spec.outDtype}${spec.outRaw ? 'r' : ''}${spec.outView ? 's' : ''}`
    + (vectorized ? `:v4.${broadcast.map((b) => (b ? 'b' : 'c')).join('')}` : '');
  const layout = mapParams(rank, inputDtypes.length, spec.outView !== undefined);
  const kernel = rt.kernel(key, () => (vectorized
    ? vectorSource(spec, layout, rank, inputDtypes, raws, broadcast)
    : buildSource(spec, layout, rank, inputDtypes, raws)));

  const outTarget = spec.outView !== undefined
    ? asWebGpuStorage(spec.outView.storage)
    : { dtype: spec.outDtype, numel: total, byteSize: storageBytes(spec.outDtype, total) };
  const outOffset = spec.outView?.offset ?? 0;
  const outStrides = spec.outView !== undefined ? strides[strides.length - 1]! : contiguousStrides(shape);

  const windowOf = (s: StorageExtent, viewStrides: readonly number[], offset: number, lo: number, hi: number) => {
    if (s.byteSize <= rt.maxBindingBytes) return { start: 0, end: s.numel };
    const [min, max] = linearSpan(shape, viewStrides, offset, lo, hi);
    return { start: min, end: max + 1 };
  };
  const fits = (lo: number, hi: number): boolean => {
    for (let j = 0; j < inputStorages.length; j++) {
      const w = windowOf(inputStorages[j]!, strides[j]!, offsets[j]!, lo, hi);
      if (!rt.fitsBinding(inputStorages[j]!, w.start, w.end)) return false;
    }
    const w = windowOf(outTarget, outStrides, outOffset, lo, hi);
    return rt.fitsBinding(outTarget, w.start, w.end);
  };
  // Plan before allocating: a half output whose element pairs cannot be split throws PairSplitError.
  let pieces: Array<[number, number]>;
  try {
    pieces = planLinearPieces(total, vectorized ? 4 : outHalf ? 2 : 1, fits);
  } catch (error) {
    if (outHalf) throw new PairSplitError((error as Error).message);
    throw error;
  }
  const out = spec.outView !== undefined ? outTarget as WebGpuStorage : rt.allocate(spec.outDtype, total);

  for (const [lo, hi] of pieces) {
    const values: Record<string, number> = { start: lo, end: hi, scalar: spec.scalar ?? 0, bits: spec.bits ?? 0 };
    shape.forEach((size, d) => { values[`d${d}`] = size; });
    const bindings: GPUBufferBinding[] = [];
    inputStorages.forEach((s, j) => {
      const w = windowOf(s, strides[j]!, offsets[j]!, lo, hi);
      const bound = rt.bindRange(s, w.start, w.end);
      bindings.push(bound.binding);
      values[`i${j}o`] = offsets[j]! - bound.base;
      strides[j]!.forEach((stride, d) => { values[`i${j}s${d}`] = stride; });
    });
    const w = windowOf(out, outStrides, outOffset, lo, hi);
    const bound = rt.bindRange(out, w.start, w.end);
    bindings.push(bound.binding);
    values.oo = outOffset - bound.base;
    if (spec.outView !== undefined) outStrides.forEach((stride, d) => { values[`os${d}`] = stride; });
    const count = vectorized ? Math.ceil((hi - lo) / 4) : outHalf ? Math.ceil((hi - lo) / 2) : hi - lo;
    values.count = count;
    rt.dispatch(kernel, layout.pack(values), bindings, Math.ceil(count / WORKGROUP));
  }
  return spec.outView !== undefined ? null : out;
}
