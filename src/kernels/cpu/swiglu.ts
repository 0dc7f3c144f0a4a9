// SwiGLU on the CPU: silu(gate) · up and its gradient. The forward runs as WebAssembly SIMD generated at
// startup, four lanes of silu(g) · u = g / (1 + exp(−g)) · u in f32, with softmax-wasm.ts's exp (Cephes' expf,
// within 2 ulp of Math.exp): a chunk of gate and up at a time is copied into the module's own memory and the
// result copied out. Scalar Math.exp was nine tenths of the plain loop's time (45 µs for 4 864 elements, one
// decode step's MLP); that loop stays as the fallback where WebAssembly SIMD is missing.
//
// Edges as silu's: 0 at ±0, g · u for large g, ∓0 for g below −88 (where exp(−g) is +Infinity), NaN for NaN
// and for g = −Infinity (−∞ / ∞, as torch's silu(−inf) = −inf · sigmoid(−inf)).
import type { Storage } from '../backend.ts';
import { CpuStorage, f32Of } from './storage.ts';
import { allocateF32Overwritten } from './array-pool.ts';
import { WasmModule } from './wasm-assembler.ts';
import { wasmSimdSupported } from './matmul-wasm.ts';
import { emitExp, expConstants } from './softmax-wasm.ts';

/** Floats of gate (and of up) per pass: the two chunks take 32 KiB of the module's one 64 KiB page. */
const CHUNK = 4096;

/** swiglu(gate, up, n): gate[i] = gate[i] / (1 + exp(−gate[i])) · up[i] in place, n a multiple of 4 (byte pointers). */
function buildSwigluModule(): Uint8Array<ArrayBuffer> {
  const module = new WasmModule({ module: 'env', name: 'memory', initial: 1, maximum: 1, shared: false });
  const f = module.addFunction('swiglu', ['i32', 'i32', 'i32'], []);
  const [gate, up, n] = [f.param(0), f.param(1), f.param(2)];
  const k = expConstants(f);
  const [i, end, g, negated] = [f.local('i32'), f.local('i32'), f.local('v128'), f.local('v128')];
  const t = [f.local('v128'), f.local('v128'), f.local('v128'), f.local('v128')] as const;
  f.get(n).i32(2).op('i32.shl').set(end);
  f.forRange(i, () => f.i32(0), () => f.get(end), 16, () => {
    f.get(gate).get(i).op('i32.add').mem('v128.load').set(g);
    f.get(k.zero).get(g).op('f32x4.sub').set(negated); // −g (exp(±0) is 1 either way)
    f.get(gate).get(i).op('i32.add'); // the store's address
    f.get(g);
    emitExp(f, k, negated, t, false);
    f.get(k.one).op('f32x4.add').op('f32x4.div');
    f.get(up).get(i).op('i32.add').mem('v128.load').op('f32x4.mul');
    f.mem('v128.store');
  });
  return module.encode();
}

interface SwigluModule {
  swiglu(gate: number, up: number, n: number): void;
}

/** out[i] = silu(g[i]) · u[i] for i < n, through the module a chunk at a time. */
type SwigluKernel = (g: Float32Array, u: Float32Array, out: Float32Array, n: number) => void;

function wasmSwiglu(): SwigluKernel {
  const memory = new WebAssembly.Memory({ initial: 1, maximum: 1 });
  const { swiglu } = new WebAssembly.Instance(new WebAssembly.Module(buildSwigluModule()), { env: { memory } }).exports as unknown as SwigluModule;
  const chunks = new Float32Array(memory.buffer); // gate at [0, CHUNK), up at [CHUNK, 2 CHUNK)
  return (g, u, out, n) => {
    for (let start = 0; start < n; start += CHUNK) {
      const cols = Math.min(CHUNK, n - start);
      chunks.set(g.subarray(start, start + cols), 0);
      chunks.set(u.subarray(start, start + cols), CHUNK);
      // Up to 3 floats past cols are stale: computed on and never read.
      swiglu(0, 4 * CHUNK, Math.ceil(cols / 4) * 4);
      out.set(chunks.subarray(0, cols), start);
    }
  };
}

/** The plain loop, in f64. */
export const scalarSwiglu: SwigluKernel = (g, u, out, n) => {
  for (let i = 0; i < n; i++) out[i] = (g[i]! / (1 + Math.exp(-g[i]!))) * u[i]!;
};

let kernel: SwigluKernel | undefined;

/** The kernel the backend uses: WebAssembly SIMD where the runtime has it. */
export function swigluKernel(): SwigluKernel {
  return (kernel ??= wasmSimdSupported() ? wasmSwiglu() : scalarSwiglu);
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

// swiglu: gate, up [n] -> silu(gate) * up.
export function swiglu(gate: Storage, up: Storage, n: number, run: SwigluKernel = swigluKernel()): Storage {
  const out = allocateF32Overwritten(n);
  run(f32Of(gate, 'swiglu'), f32Of(up, 'swiglu'), out, n);
  return new CpuStorage('f32', out);
}

// swigluBackward: dgate = dy * up * silu'(gate), dup = dy * silu(gate).
export function swigluBackward(gate: Storage, up: Storage, dy: Storage, n: number) {
  const g = f32Of(gate, 'swigluBackward');
  const u = f32Of(up, 'swigluBackward');
  const grad = f32Of(dy, 'swigluBackward');
  const dgate = new Float32Array(n);
  const dup = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const s = sigmoid(g[i]!);
    dup[i] = grad[i]! * g[i]! * s;
    dgate[i] = grad[i]! * u[i]! * s * (1 + g[i]! * (1 - s));
  }
  return { dgate: new CpuStorage('f32', dgate) as Storage, dup: new CpuStorage('f32', dup) as Storage };
}
