// The one op-test helper every op goes through (tinygrad's helper_test_op): an op is described once, as
// a spec, and checked (1) against central finite differences for its gradient and (2) across backends.
import type { Backend, DType } from '../../src/kernels/backend.ts';
import { Random } from '../../src/tensor/random.ts';
import { Tensor, tidy } from '../../src/tensor/tensor.ts';
import { backward, noGrad, requireGrad } from '../../src/tensor/autograd.ts';
import { tensor } from '../../src/tensor/ops.ts';

export interface InputSpec {
  shape: number[];
  data: Float32Array | Int32Array;
  dtype?: DType;
  /** Differentiate with respect to this input. */
  grad?: boolean;
}

export interface OpCase {
  inputs: InputSpec[];
  run: (inputs: Tensor[]) => Tensor;
  label: string;
}

function materialize(spec: InputSpec, backend: Backend, withGrad: boolean): Tensor {
  const t = tensor(spec.data, spec.shape, { backend, dtype: spec.dtype ?? (spec.data instanceof Int32Array ? 'i32' : 'f32') });
  if (withGrad && spec.grad) requireGrad(t);
  return t;
}

/** A fixed random projection, so the scalar loss sum(out * r) exercises every output element. */
function projection(n: number): Float64Array {
  const rng = new Random(1234 + n);
  return Float64Array.from({ length: n }, () => rng.range(-1, 1));
}

async function projectedLoss(c: OpCase, backend: Backend, override?: { input: number; data: Float32Array }): Promise<number> {
  const out = noGrad(() =>
    tidy(() => {
      const inputs = c.inputs.map((spec, i) =>
        materialize(override && override.input === i ? { ...spec, data: override.data } : spec, backend, false),
      );
      return c.run(inputs);
    }),
  );
  const values = await out.toFloat32Array();
  out.dispose();
  const r = projection(values.length);
  let loss = 0;
  for (let i = 0; i < values.length; i++) loss += values[i]! * r[i]!;
  return loss;
}

export interface Evaluation {
  output: Float32Array;
  shape: readonly number[];
  grads: (Float32Array | null)[];
}

/** Forward and analytic gradients of sum(out * r) on one backend. */
export async function evaluate(c: OpCase, backend: Backend): Promise<Evaluation> {
  const inputs = c.inputs.map((spec) => materialize(spec, backend, true));
  const out = c.run(inputs);
  const output = await out.toFloat32Array();
  const shape = out.shape;
  const grads: (Float32Array | null)[] = [];
  if (c.inputs.some((s) => s.grad)) {
    const r = tensor(Float32Array.from(projection(out.size)), out.shape, { backend });
    const { mul, sum } = await import('../../src/tensor/ops.ts');
    const loss = sum(mul(out, r));
    backward(loss);
    loss.dispose();
    r.dispose();
  }
  for (let i = 0; i < inputs.length; i++) {
    const t = inputs[i]!;
    grads.push(c.inputs[i]!.grad ? (t.grad ? await t.grad.toFloat32Array() : new Float32Array(t.size)) : null);
    t.grad?.dispose();
    t.dispose();
  }
  out.dispose();
  return { output, shape, grads };
}

export function maxRelativeError(actual: ArrayLike<number>, expected: ArrayLike<number>, floor = 1): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} vs ${expected.length}`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (Number.isNaN(a) !== Number.isNaN(e)) return Infinity;
    if (Number.isNaN(a) || a === e) continue;
    const err = Math.abs(a - e) / Math.max(floor, Math.abs(e));
    if (err > worst) worst = err;
  }
  return worst;
}

/**
 * Checks every analytic gradient against central finite differences of the projected loss, evaluated on
 * `backend` (cpu: f32 storage, f64 accumulation). Throws with the op, input and element on mismatch.
 */
export async function checkGradients(c: OpCase, backend: Backend, tolerance = 2e-2, step = 1e-2): Promise<void> {
  const { grads } = await evaluate(c, backend);
  for (let i = 0; i < c.inputs.length; i++) {
    const spec = c.inputs[i]!;
    if (!spec.grad) continue;
    const analytic = grads[i]!;
    const base = spec.data as Float32Array;
    const numeric = new Float32Array(base.length);
    for (let j = 0; j < base.length; j++) {
      const plus = Float32Array.from(base);
      const minus = Float32Array.from(base);
      plus[j]! += step;
      minus[j]! -= step;
      const lp = await projectedLoss(c, backend, { input: i, data: plus });
      const lm = await projectedLoss(c, backend, { input: i, data: minus });
      numeric[j] = (lp - lm) / (2 * step);
    }
    const err = maxRelativeError(analytic, numeric);
    if (!(err <= tolerance)) {
      let worstIndex = 0;
      for (let j = 1; j < base.length; j++) {
        if (Math.abs(analytic[j]! - numeric[j]!) > Math.abs(analytic[worstIndex]! - numeric[worstIndex]!)) worstIndex = j;
      }
      throw new Error(
        `${c.label}: gradient of input ${i} ${JSON.stringify(spec.shape)} differs from finite differences ` +
          `(max rel err ${err.toExponential(2)} > ${tolerance}); element ${worstIndex}: analytic ${analytic[worstIndex]} vs numeric ${numeric[worstIndex]}`,
      );
    }
  }
}

/** Same op on two backends: outputs and gradients must agree. */
export async function checkAcrossBackends(c: OpCase, reference: Backend, candidate: Backend, tolerance = 1e-4): Promise<void> {
  const expected = await evaluate(c, reference);
  const actual = await evaluate(c, candidate);
  if (expected.shape.join() !== actual.shape.join()) {
    throw new Error(`${c.label}: output shape ${actual.shape} on ${candidate.name} vs ${expected.shape} on ${reference.name}`);
  }
  const outErr = maxRelativeError(actual.output, expected.output);
  if (!(outErr <= tolerance)) throw new Error(`${c.label}: ${candidate.name} output differs from ${reference.name} (rel err ${outErr.toExponential(2)})`);
  expected.grads.forEach((g, i) => {
    if (!g) return;
    const err = maxRelativeError(actual.grads[i]!, g);
    if (!(err <= tolerance)) throw new Error(`${c.label}: ${candidate.name} gradient of input ${i} differs from ${reference.name} (rel err ${err.toExponential(2)})`);
  });
}
