// Golden values from PyTorch: every case in test/fixtures/golden-ops.json (made by scripts/make_golden.py
// with float64 math on float32-rounded inputs) is rebuilt with rank1 ops; the forward output and the
// gradients of sum(out * r) for the fixture's projection r must match. The fixture is plain JSON, so this
// test never needs torch.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { Backend } from '../src/kernels/backend.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { backward, requireGrad } from '../src/tensor/autograd.ts';
import * as ops from '../src/tensor/ops.ts';
import { keep, type Tensor } from '../src/tensor/tensor.ts';
import { AdamW } from '../src/train/adamw.ts';

// ---- fixture format -----------------------------------------------------------------------------

interface GoldenInput {
  name: string;
  dtype: 'f32' | 'i32' | 'bf16';
  shape: number[];
  /** f32: values; i32: ids; bf16: raw uint16 bit patterns. */
  data: number[];
  /** f32 only: whether the gradient of this input is checked. */
  grad?: boolean;
}

interface GoldenCase {
  name: string;
  op: string;
  attrs: Record<string, unknown>;
  inputs: GoldenInput[];
  out: { shape: number[]; data: number[] };
  r: number[];
  grads: Record<string, number[]>;
}

interface GoldenFile {
  torch: string;
  cases: GoldenCase[];
  adamw: {
    options: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number };
    shape: number[];
    initial: number[];
    grads: number[][];
    params: number[][];
  };
}

const golden = JSON.parse(readFileSync(new URL('./fixtures/golden-ops.json', import.meta.url), 'utf8')) as GoldenFile;

// ---- rebuilding each case with rank1 ops ----------------------------------------------------------

type Inputs = Record<string, Tensor>;
type Attrs = Record<string, unknown>;

function need(inputs: Inputs, name: string): Tensor {
  const t = inputs[name];
  if (!t) throw new Error(`golden case has no input "${name}"`);
  return t;
}

const axesOf = (attrs: Attrs) => attrs.axes as number | number[] | undefined;
const keepDimsOf = (attrs: Attrs) => (attrs.keepDims as boolean | undefined) ?? false;

const builders: Record<string, (x: Inputs, attrs: Attrs) => Tensor> = {
  add: (x) => ops.add(need(x, 'a'), need(x, 'b')),
  sub: (x) => ops.sub(need(x, 'a'), need(x, 'b')),
  mul: (x) => ops.mul(need(x, 'a'), need(x, 'b')),
  div: (x) => ops.div(need(x, 'a'), need(x, 'b')),
  addScalar: (x, a) => ops.add(need(x, 'a'), a.scalar as number),
  mulScalar: (x, a) => ops.mul(need(x, 'a'), a.scalar as number),
  divScalar: (x, a) => ops.div(need(x, 'a'), a.scalar as number),
  neg: (x) => ops.neg(need(x, 'a')),
  exp: (x) => ops.exp(need(x, 'a')),
  log: (x) => ops.log(need(x, 'a')),
  sqrt: (x) => ops.sqrt(need(x, 'a')),
  rsqrt: (x) => ops.rsqrt(need(x, 'a')),
  square: (x) => ops.square(need(x, 'a')),
  pow: (x, a) => ops.pow(need(x, 'a'), a.exponent as number),
  abs: (x) => ops.abs(need(x, 'a')),
  sigmoid: (x) => ops.sigmoid(need(x, 'a')),
  silu: (x) => ops.silu(need(x, 'a')),
  sum: (x, a) => ops.sum(need(x, 'a'), axesOf(a), keepDimsOf(a)),
  mean: (x, a) => ops.mean(need(x, 'a'), axesOf(a), keepDimsOf(a)),
  max: (x, a) => ops.max(need(x, 'a'), axesOf(a), keepDimsOf(a)),
  matmul: (x, a) =>
    ops.matmul(need(x, 'a'), need(x, 'b'), { transA: (a.transA as boolean) ?? false, transB: (a.transB as boolean) ?? false }),
  matmulTransposedView: (x) => ops.matmul(ops.transpose(need(x, 'a')), need(x, 'b')),
  linear: (x) => ops.linear(need(x, 'x'), need(x, 'weight'), x.bias),
  softmax: (x, a) => ops.softmax(need(x, 'a'), a.axis as number),
  logSoftmax: (x, a) => ops.logSoftmax(need(x, 'a'), a.axis as number),
  embedding: (x) => ops.embedding(need(x, 'table'), need(x, 'ids')),
  rmsNorm: (x, a) => ops.rmsNorm(need(x, 'x'), need(x, 'weight'), a.eps as number),
  rope: (x) => ops.rope(need(x, 'x'), need(x, 'cos'), need(x, 'sin')),
  attention: (x, a) =>
    ops.attention(need(x, 'q'), need(x, 'k'), need(x, 'v'), { causal: a.causal as boolean, scale: a.scale as number | undefined }),
  swiglu: (x) => ops.swiglu(need(x, 'gate'), need(x, 'up')),
  crossEntropy: (x) => ops.crossEntropy(need(x, 'logits'), need(x, 'targets'), x.mask),
  crossEntropyRows: (x) => ops.crossEntropyRows(need(x, 'logits'), need(x, 'targets'), x.mask),
  klDivRows: (x) => ops.klDivRows(need(x, 'p'), need(x, 'q')),
  // Qwen2 MLP with a residual: x feeds rmsNorm and the residual add, h feeds two projections.
  mlpBlock: (x, a) => {
    const input = need(x, 'x');
    const h = ops.rmsNorm(input, need(x, 'norm_w'), a.eps as number);
    const inner = ops.swiglu(ops.linear(h, need(x, 'wg')), ops.linear(h, need(x, 'wu')));
    return ops.add(input, ops.linear(inner, need(x, 'wd')));
  },
  // Qwen2 attention: biased q/k/v projections, RoPE on q and k, GQA causal attention, o_proj.
  attentionBlock: (x, a) => {
    const input = need(x, 'x');
    const [batch, tokens, hidden] = input.shape as [number, number, number];
    const heads = a.heads as number;
    const kvHeads = a.kvHeads as number;
    const headDim = hidden / heads;
    const cos = need(x, 'cos');
    const sin = need(x, 'sin');
    const project = (w: string, b: string, h: number) =>
      ops.reshape(ops.linear(input, need(x, w), need(x, b)), [batch, tokens, h, headDim]);
    const q = ops.rope(project('wq', 'bq', heads), cos, sin);
    const k = ops.rope(project('wk', 'bk', kvHeads), cos, sin);
    const v = project('wv', 'bv', kvHeads);
    return ops.linear(ops.reshape(ops.attention(q, k, v), [batch, tokens, hidden]), need(x, 'wo'));
  },
};

/** Relative tolerance by op: 1e-5 for single elementwise/linear-algebra ops, 1e-4 where reductions or
 *  exp-normalisations over rows accumulate (reductions, attention, losses, norms, composite blocks). */
const LOOSER = new Set(['sum', 'mean', 'max', 'attention', 'crossEntropy', 'crossEntropyRows', 'klDivRows', 'rmsNorm', 'mlpBlock', 'attentionBlock']);
const toleranceOf = (op: string) => (LOOSER.has(op) ? 1e-4 : 1e-5);

/**
 * Worst |actual - expected| / max(|expected|, 0.1 · rms(expected), 1e-8): relative per element, except
 * that elements much smaller than the tensor's typical magnitude (results of cancellation, where float32
 * rounding of the terms dominates) are judged against a tenth of its RMS, and an absolute floor covers
 * tensors whose exact value is 0 (PyTorch's float64 then leaves ~1e-17 of rounding noise).
 */
function compare(actual: ArrayLike<number>, expected: readonly number[]): { err: number; index: number } {
  if (actual.length !== expected.length) return { err: Infinity, index: -1 };
  let squares = 0;
  for (const e of expected) squares += e * e;
  const floor = Math.max(0.1 * Math.sqrt(squares / Math.max(expected.length, 1)), 1e-8);
  let err = 0;
  let index = -1;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    const d = Number.isNaN(a) ? Infinity : Math.abs(a - e) / Math.max(Math.abs(e), floor);
    if (d > err) {
      err = d;
      index = i;
    }
  }
  return { err, index };
}

function closeness(what: string, actual: ArrayLike<number>, expected: readonly number[], tolerance: number): string | null {
  const { err, index } = compare(actual, expected);
  if (err <= tolerance) return null;
  const detail = index < 0 ? `length ${actual.length} vs ${expected.length}` : `element ${index}: rank1 ${actual[index]} vs torch ${expected[index]}`;
  return `${what}: max rel err ${err.toExponential(2)} > ${tolerance} (${detail})`;
}

const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

function makeInput(spec: GoldenInput, backend: Backend): Tensor {
  switch (spec.dtype) {
    case 'f32': {
      const t = ops.tensor(Float32Array.from(spec.data), spec.shape, { backend, name: spec.name });
      return spec.grad ? requireGrad(t) : t;
    }
    case 'i32':
      return ops.tensor(Int32Array.from(spec.data), spec.shape, { backend, dtype: 'i32', name: spec.name });
    case 'bf16':
      return ops.tensor(Uint16Array.from(spec.data), spec.shape, { backend, dtype: 'bf16', name: spec.name });
  }
}

/** Every disagreement of one case (shape, output, each gradient), or an empty list. */
async function caseFailures(c: GoldenCase, backend: Backend): Promise<string[]> {
  const build = builders[c.op];
  if (!build) return [`the test has no builder for op ${c.op}`];
  const tolerance = toleranceOf(c.op);
  const failures: string[] = [];
  const inputs: Inputs = {};
  let out: Tensor | null = null;
  try {
    for (const spec of c.inputs) inputs[spec.name] = makeInput(spec, backend);
    out = build(inputs, c.attrs);
    if (!sameShape(out.shape, c.out.shape)) {
      failures.push(`output shape [${out.shape.join(', ')}], torch [${c.out.shape.join(', ')}]`);
    }
    const outputFailure = closeness('output', await out.toFloat32Array(), c.out.data, tolerance);
    if (outputFailure) failures.push(outputFailure);
    const checked = c.inputs.filter((s) => s.grad);
    if (checked.length) {
      // Gradient of sum(out * r): seed backward with r, laid out in rank1's output shape, so that the
      // gradients are still compared when only the output's shape is wrong (e.g. [1] for a 0-d scalar).
      const r = ops.tensor(Float32Array.from(c.r), out.shape, { backend });
      backward(out, { grad: r });
      r.dispose();
      for (const spec of checked) {
        const g = inputs[spec.name]!.grad;
        if (!g) {
          failures.push(`backward gave no gradient for ${spec.name}`);
          continue;
        }
        if (!sameShape(g.shape, spec.shape)) failures.push(`gradient of ${spec.name} has shape [${g.shape.join(', ')}]`);
        const failure = closeness(`gradient of ${spec.name}`, await g.toFloat32Array(), c.grads[spec.name]!, tolerance);
        if (failure) failures.push(failure);
      }
    }
  } catch (error) {
    failures.push(`threw: ${(error as Error).message}`);
  } finally {
    out?.dispose();
    for (const t of Object.values(inputs)) {
      t.grad?.dispose();
      t.dispose();
    }
  }
  return failures;
}

async function checkCase(c: GoldenCase, backend: Backend): Promise<void> {
  const failures = await caseFailures(c, backend);
  if (failures.length === 0) return;
  throw new Error(`${c.op} "${c.name}" on ${backend.name} disagrees with PyTorch:\n  ${failures.join('\n  ')}`);
}

async function checkAdamW(backend: Backend): Promise<void> {
  const { options, shape, initial, grads, params } = golden.adamw;
  const p = requireGrad(keep(ops.tensor(Float32Array.from(initial), shape, { backend })));
  const optimizer = new AdamW([p], {
    lr: options.lr,
    betas: [options.beta1, options.beta2],
    eps: options.eps,
    weightDecay: options.weightDecay,
  });
  try {
    for (let step = 0; step < grads.length; step++) {
      p.grad?.dispose();
      p.grad = keep(ops.tensor(Float32Array.from(grads[step]!), shape, { backend }));
      optimizer.step();
      const failure = closeness(`params after step ${step + 1}`, await p.toFloat32Array(), params[step]!, 1e-5);
      if (failure) throw new Error(`AdamW on ${backend.name} disagrees with torch.optim.AdamW: ${failure}`);
    }
  } finally {
    optimizer.dispose();
    p.grad?.dispose();
    p.dispose();
  }
}

// ---- the tests ------------------------------------------------------------------------------------

// WebGPU: test/webgpu-helpers.ts (the shared adapter probe) does not exist yet, so these goldens run on
// the CPU backend only; add the WebGPU backend to this list once the probe lands.
const backends: { name: string; get: () => Backend }[] = [{ name: 'cpu', get: getCpuBackend }];

describe('golden values against PyTorch', () => {
  it('the fixture is well formed', () => {
    expect(golden.cases.length).toBeGreaterThan(50);
    const names = new Set(golden.cases.map((c) => c.name));
    expect(names.size, 'case names are unique').toBe(golden.cases.length);
    for (const c of golden.cases) expect(builders[c.op], `builder for op ${c.op}`).toBeDefined();
  });

  for (const { name, get } of backends) {
    describe(name, () => {
      for (const c of golden.cases) {
        it(`${c.op}: ${c.name}`, async () => {
          await checkCase(c, get());
        });
      }
      it('AdamW: 3 steps of torch.optim.AdamW(betas=(0.9, 0.95), eps=1e-8, weight_decay=1e-4, lr=1e-3)', async () => {
        await checkAdamW(get());
      });
    });
  }
});
