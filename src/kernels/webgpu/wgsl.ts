// WGSL building blocks shared by the kernels: how each dtype is declared, loaded and stored, the
// uniform-params struct and its packing, and the linear workgroup index over a 2-D grid.
//
// Storage layout in shaders: f32 as array<f32>, i32 as array<i32>, f16/bf16 packed two per u32 as
// array<u32> (element e is bits 16*(e&1).. of word e>>1). Halves are widened and narrowed with integer
// code that mirrors src/kernels/dtype.ts bit for bit, so GPU and CPU round the same way.

import type { DType } from '../backend.ts';

export type ParamType = 'u32' | 'i32' | 'f32';

/** An ordered uniform struct of 4-byte scalars; `pack` writes values in the same order. */
export class ParamLayout<K extends string> {
  readonly names: readonly K[];
  constructor(readonly fields: Readonly<Record<K, ParamType>>) {
    this.names = Object.keys(fields) as K[];
  }

  /** `struct Params {...}` plus its binding at @binding(0). */
  wgsl(): string {
    const members = this.names.map((name) => `  ${name}: ${this.fields[name]},`).join('\n');
    return `struct Params {\n${members}\n}\n@group(0) @binding(0) var<uniform> params: Params;\n`;
  }

  pack(values: Readonly<Record<K, number>>): ArrayBuffer {
    const buffer = new ArrayBuffer(Math.max(16, Math.ceil((this.names.length * 4) / 16) * 16));
    const u32 = new Uint32Array(buffer);
    const i32 = new Int32Array(buffer);
    const f32 = new Float32Array(buffer);
    this.names.forEach((name, i) => {
      const value = values[name];
      const type = this.fields[name];
      if (type === 'f32') f32[i] = value;
      else if (type === 'i32') i32[i] = value;
      else u32[i] = value >>> 0; // element offsets relative to a window may be "negative": u32 wraps in WGSL too
    });
    return buffer;
  }
}

export function params<K extends string>(fields: Readonly<Record<K, ParamType>>): ParamLayout<K> {
  return new ParamLayout(fields);
}

/** The WGSL element type a dtype is stored as. */
export function storageElementType(dtype: DType): string {
  return dtype === 'f32' ? 'f32' : dtype === 'i32' ? 'i32' : 'u32';
}

/** `@group(0) @binding(b) var<storage, ...> name: array<...>;` */
export function storageDecl(binding: number, name: string, dtype: DType, access: 'read' | 'write'): string {
  const mode = access === 'read' ? 'read' : 'read_write';
  return `@group(0) @binding(${binding}) var<storage, ${mode}> ${name}: array<${storageElementType(dtype)}>;\n`;
}

/** `fn load_<name>(e: u32) -> f32`: element e of buffer `name` widened to f32. */
export function loadFn(name: string, dtype: DType): string {
  switch (dtype) {
    case 'f32': return `fn load_${name}(e: u32) -> f32 { return ${name}[e]; }\n`;
    case 'i32': return `fn load_${name}(e: u32) -> f32 { return f32(${name}[e]); }\n`;
    case 'bf16': return `fn load_${name}(e: u32) -> f32 { return bf16_to_f32(half_bits(${name}[e >> 1u], e)); }\n`;
    case 'f16': return `fn load_${name}(e: u32) -> f32 { return f16_to_f32(half_bits(${name}[e >> 1u], e)); }\n`;
  }
}

/** Expression narrowing f32 `value` to the 16 bits of a half dtype. */
export function narrowExpr(dtype: 'f16' | 'bf16', value: string): string {
  return dtype === 'bf16' ? `f32_to_bf16(${value})` : `f32_to_f16(${value})`;
}

/** Helpers every shader may use: half conversions and the linear workgroup index. */
export const PRELUDE = /* wgsl */ `
fn half_bits(word: u32, e: u32) -> u32 { return (word >> ((e & 1u) * 16u)) & 0xffffu; }

fn bf16_to_f32(bits: u32) -> f32 { return bitcast<f32>(bits << 16u); }

fn f16_to_f32(bits: u32) -> f32 {
  let sign = (bits & 0x8000u) << 16u;
  let expo = (bits >> 10u) & 0x1fu;
  let mant = bits & 0x3ffu;
  if (expo == 0u) {
    let tiny = f32(mant) * 5.9604644775390625e-8; // subnormal: mant * 2^-24, a normal f32
    return select(tiny, -tiny, sign != 0u);
  }
  if (expo == 31u) { return bitcast<f32>(sign | 0x7f800000u | (mant << 13u)); }
  return bitcast<f32>(sign | ((expo + 112u) << 23u) | (mant << 13u));
}

// Round to nearest even; NaN stays a quiet NaN (as src/kernels/dtype.ts f32ToBf16).
fn f32_to_bf16(value: f32) -> u32 {
  let bits = bitcast<u32>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) { return ((bits >> 16u) | 0x40u) & 0xffffu; }
  return ((bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u) & 0xffffu;
}

// Round to nearest even, overflow to infinity (as src/kernels/dtype.ts f32ToF16).
fn f32_to_f16(value: f32) -> u32 {
  let x = bitcast<u32>(value);
  let sign = (x >> 16u) & 0x8000u;
  let expo = (x >> 23u) & 0xffu;
  var mant = x & 0x7fffffu;
  if (expo == 0xffu) { return sign | 0x7c00u | select(0u, 0x200u, mant != 0u); }
  let e = i32(expo) - 112;
  if (e >= 31) { return sign | 0x7c00u; }
  if (e <= 0) {
    if (e < -10) { return sign; }
    mant = mant | 0x800000u;
    let shift = u32(14 - e);
    var sub = mant >> shift;
    let rem = mant & ((1u << shift) - 1u);
    let mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (sub & 1u) != 0u)) { sub += 1u; }
    return sign | sub;
  }
  var half = (u32(e) << 10u) | (mant >> 13u);
  let rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u) != 0u)) { half += 1u; }
  return sign | half;
}

// NaN and -infinity built at run time: a constant expression evaluating to either is a WGSL compile error.
fn nan_f32() -> f32 { var bits = 0x7fc00000u; return bitcast<f32>(bits); }
fn neg_inf() -> f32 { var bits = 0xff800000u; return bitcast<f32>(bits); }

// The workgroup's index in a dispatch laid out by WebGpuRuntime.grid (x first, then y).
fn workgroup_index(wg: vec3<u32>, groups: vec3<u32>) -> u32 { return wg.x + wg.y * groups.x; }
`;

/** Entry-point builtins every kernel takes; `workgroup_index(wg, groups)` gives the linear workgroup. */
export const ENTRY_ARGS = '@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, '
  + '@builtin(local_invocation_index) lid: u32';

/**
 * `workgroup_sum(lid, v)` and `workgroup_max(lid, v)` over a workgroup of `size` (a power of two) threads:
 * a tree in workgroup memory. Call from uniform control flow; every thread gets the result.
 */
export function workgroupReductions(size: number): string {
  return /* wgsl */ `
var<workgroup> reduction_scratch: array<f32, ${size}>;
fn workgroup_sum(lid: u32, value: f32) -> f32 {
  reduction_scratch[lid] = value;
  workgroupBarrier();
  for (var stride = ${size / 2}u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { reduction_scratch[lid] = reduction_scratch[lid] + reduction_scratch[lid + stride]; }
    workgroupBarrier();
  }
  let total = reduction_scratch[0];
  workgroupBarrier();
  return total;
}
fn workgroup_max(lid: u32, value: f32) -> f32 {
  reduction_scratch[lid] = value;
  workgroupBarrier();
  for (var stride = ${size / 2}u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      let other = reduction_scratch[lid + stride];
      if (other > reduction_scratch[lid] || other != other) { reduction_scratch[lid] = other; }
    }
    workgroupBarrier();
  }
  let total = reduction_scratch[0];
  workgroupBarrier();
  return total;
}
`;
}
