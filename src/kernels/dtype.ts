// Half-precision bit conversions shared by every backend and loader. f16/bf16 are stored as raw
// Uint16 bit patterns; compute always widens to f32.

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** bf16 bits -> f32: bf16 is the top half of an f32. */
export function bf16ToF32(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16;
  return f32Scratch[0]!;
}

/** f32 -> bf16 bits, round to nearest even (as torch does); NaN stays NaN. */
export function f32ToBf16(value: number): number {
  f32Scratch[0] = value;
  const bits = u32Scratch[0]!;
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff; // quiet NaN
  const roundingBias = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + roundingBias) >>> 16) & 0xffff;
}

/** IEEE half bits -> f32. */
export function f16ToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** f32 -> IEEE half bits, round to nearest even, overflow to infinity. */
export function f32ToF16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

export function widenToF32(bits: Uint16Array, dtype: 'f16' | 'bf16'): Float32Array {
  const out = new Float32Array(bits.length);
  if (dtype === 'bf16') {
    new Uint32Array(out.buffer).set(bits);
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < u.length; i++) u[i] = u[i]! << 16;
  } else {
    for (let i = 0; i < bits.length; i++) out[i] = f16ToF32(bits[i]!);
  }
  return out;
}

export function narrowFromF32(values: ArrayLike<number>, dtype: 'f16' | 'bf16'): Uint16Array {
  const out = new Uint16Array(values.length);
  const convert = dtype === 'bf16' ? f32ToBf16 : f32ToF16;
  for (let i = 0; i < values.length; i++) out[i] = convert(values[i]!);
  return out;
}
