// Square matmul cases, C [n, n] = A [n, n] · B [n, n], f32; and the LoRA-relevant bf16-weight case
// y = x Wᵀ with W stored bf16 [n, n] (the Hugging Face Linear layout, transB).
import { Random, matmul, randomNormalArray, tensor, type Backend } from '../../src/tensor/index.ts';
import { bf16ToF32, f32ToBf16 } from '../../src/kernels/dtype.ts';
import { shutdownMatmulWorkers } from '../../src/kernels/cpu/matmul.ts';
import type { CaseSpec, Implementation, Runnable } from '../harness.ts';
import { opRunnable, rank1Implementation } from './rank1.ts';

export interface MatmulInputs {
  n: number;
  /** A [n, n], row-major. */
  a: Float32Array;
  /** B [n, n], row-major (k rows, n columns). */
  b: Float32Array;
}

/** A peer library's square f32 matmul; setup uploads A and B once, iterate multiplies and reads C[0, 0]. */
export interface MatmulPeer {
  impl: Implementation;
  setup(inputs: MatmulInputs): Promise<Runnable>;
}

/** The same seeded inputs for every implementation at a size, so their C[0, 0] can be checked. */
export function matmulInputs(n: number): MatmulInputs {
  const rng = new Random(1000 + n);
  return { n, a: randomNormalArray(n * n, rng), b: randomNormalArray(n * n, rng) };
}

export const matmulFlops = (n: number) => 2 * n * n * n;

/**
 * C[0, 0] = Σ_t A[0, t] · B[t, 0], with a tolerance of relative · Σ |A[0, t] · B[t, 0]|: f32 summation in any
 * order is within k · 2⁻²⁴ of that (1.2e-4 at k = 2048); a wrong element is off by about √k · 1.
 */
function firstElement(a: Float32Array, bAt: (t: number) => number, n: number, relative: number) {
  let value = 0;
  let magnitude = 0;
  for (let t = 0; t < n; t++) {
    value += a[t]! * bAt(t);
    magnitude += Math.abs(a[t]! * bAt(t));
  }
  return { value, tolerance: relative * magnitude + 1e-6 };
}

export function rank1MatmulCase(backend: Backend, inputs: MatmulInputs): CaseSpec {
  const { n } = inputs;
  return {
    group: 'matmul', name: `matmul f32 ${n}²`, size: n, impl: rank1Implementation(backend),
    flops: matmulFlops(n),
    expected: firstElement(inputs.a, (t) => inputs.b[t * n]!, n, 3e-4),
    async setup() {
      const a = tensor(inputs.a, [n, n], { backend });
      const b = tensor(inputs.b, [n, n], { backend });
      return opRunnable([a, b], () => matmul(a, b));
    },
  };
}

/** x [n, n] f32 · Wᵀ with W [n, n] stored bf16 and read packed by the kernel. */
export function rank1Bf16WeightMatmulCase(backend: Backend, inputs: MatmulInputs): CaseSpec {
  const { n } = inputs;
  // W is B reinterpreted as [n (out), n (in)]; the reference rounds it to bf16 exactly as storage does.
  const wAt = (t: number) => bf16ToF32(f32ToBf16(inputs.b[t]!));
  return {
    group: 'matmul', name: `matmul bf16-weight ${n}² (transB)`, size: n, impl: rank1Implementation(backend),
    flops: matmulFlops(n),
    expected: firstElement(inputs.a, wAt, n, 3e-4),
    async setup() {
      const x = tensor(inputs.a, [n, n], { backend });
      const w = tensor(inputs.b, [n, n], { backend, dtype: 'bf16' });
      return opRunnable([x, w], () => matmul(x, w, { transB: true }));
    },
  };
}

export function peerMatmulCase(peer: MatmulPeer, inputs: MatmulInputs): CaseSpec {
  const { n } = inputs;
  return {
    group: 'matmul', name: `matmul f32 ${n}²`, size: n, impl: peer.impl,
    flops: matmulFlops(n),
    expected: firstElement(inputs.a, (t) => inputs.b[t * n]!, n, 3e-4),
    setup: () => peer.setup(inputs),
  };
}

/** The label of rank1's CPU matmul forced onto the mul+add kernel (Node 20's) by RANK1_WASM_RELAXED_SIMD=0. */
export const mulAddImplementation: Implementation = { name: 'rank1 cpu mul+add', device: 'cpu', kind: 'rank1' };

/**
 * rank1's CPU f32 matmul on the mul+add kernel, in the same process as the relaxed-fma one: setup stops the
 * matmul engine and sets RANK1_WASM_RELAXED_SIMD=0, so the next matmul builds a mul+add engine; dispose stops
 * that one and restores the variable, so the cases after it get the default kernel again.
 */
export function rank1MulAddMatmulCase(backend: Backend, inputs: MatmulInputs): CaseSpec {
  const { n } = inputs;
  return {
    group: 'matmul', name: `matmul f32 ${n}²`, size: n, impl: mulAddImplementation,
    flops: matmulFlops(n),
    expected: firstElement(inputs.a, (t) => inputs.b[t * n]!, n, 3e-4),
    async setup() {
      const before = process.env.RANK1_WASM_RELAXED_SIMD;
      shutdownMatmulWorkers();
      process.env.RANK1_WASM_RELAXED_SIMD = '0';
      const a = tensor(inputs.a, [n, n], { backend });
      const b = tensor(inputs.b, [n, n], { backend });
      const inner = opRunnable([a, b], () => matmul(a, b));
      return {
        iterate: () => inner.iterate(),
        dispose() {
          inner.dispose();
          shutdownMatmulWorkers();
          if (before === undefined) delete process.env.RANK1_WASM_RELAXED_SIMD;
          else process.env.RANK1_WASM_RELAXED_SIMD = before;
        },
      };
    },
  };
}
