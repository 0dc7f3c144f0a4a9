// Every differentiable op, described once as a fast-check generator of cases. The gradient test runs
// them against finite differences on the CPU backend; the WebGPU test runs them against the CPU backend.
import fc from 'fast-check';
import { Random } from '../../src/tensor/random.ts';
import * as ops from '../../src/tensor/ops.ts';
import type { Tensor } from '../../src/tensor/tensor.ts';
import type { InputSpec, OpCase } from './op-check.ts';

export interface OpSpec {
  name: string;
  cases: fc.Arbitrary<OpCase>;
  /** Finite-difference tolerance when the op is badly conditioned (e.g. rsqrt near 0). */
  gradTolerance?: number;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function floats(shape: number[], rng: Random, low = -1, high = 1, grad = true): InputSpec {
  return { shape, data: Float32Array.from({ length: numel(shape) }, () => rng.range(low, high)), grad };
}

function ints(shape: number[], rng: Random, bound: number): InputSpec {
  return { shape, data: Int32Array.from({ length: numel(shape) }, () => rng.int(bound)) };
}

const dim = (max = 4) => fc.integer({ min: 1, max });
const shapeArb = (maxRank = 3, maxDim = 4) => fc.array(dim(maxDim), { minLength: 1, maxLength: maxRank });
const seedArb = fc.integer({ min: 0, max: 2 ** 31 - 1 });

/** A shape and a second shape broadcastable against it (some axes set to 1 or dropped). */
const broadcastPair = fc
  .tuple(shapeArb(3, 4), fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }), fc.integer({ min: 0, max: 2 }))
  .map(([shape, ones, drop]) => {
    const other = shape.map((d, i) => (ones[i] ? 1 : d)).slice(Math.min(drop, shape.length - 1));
    return [shape, other] as const;
  });

function binarySpec(name: string, run: (a: Tensor, b: Tensor) => Tensor, positiveB = false): OpSpec {
  return {
    name,
    cases: fc.tuple(broadcastPair, fc.boolean(), seedArb).map(([[sa, sb], swap, seed]) => {
      const rng = new Random(seed);
      const [first, second] = swap ? [sb, sa] : [sa, sb];
      return {
        label: `${name} ${JSON.stringify(first)} ${JSON.stringify(second)}`,
        inputs: [floats([...first], rng), positiveB ? floats([...second], rng, 0.5, 2) : floats([...second], rng)],
        run: ([a, b]) => run(a!, b!),
      };
    }),
  };
}

function unarySpec(name: string, run: (a: Tensor) => Tensor, low = -2, high = 2, gradTolerance?: number): OpSpec {
  return {
    name,
    gradTolerance,
    cases: fc.tuple(shapeArb(), seedArb).map(([shape, seed]) => ({
      label: `${name} ${JSON.stringify(shape)}`,
      inputs: [floats(shape, new Random(seed), low, high)],
      run: ([a]) => run(a!),
    })),
  };
}

/** Random non-empty subset of the axes of a shape, and keepDims. */
const reduceCase = fc.tuple(shapeArb(4, 4), fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }), fc.boolean(), seedArb);

function reduceSpec(name: 'sum' | 'mean' | 'max'): OpSpec {
  return {
    name,
    cases: reduceCase.map(([shape, pick, keepDims, seed]) => {
      let axes = shape.map((_, i) => i).filter((i) => pick[i]);
      if (axes.length === 0) axes = [shape.length - 1];
      const rng = new Random(seed);
      return {
        label: `${name} ${JSON.stringify(shape)} axes ${axes} keepDims ${keepDims}`,
        inputs: [floats(shape, rng)],
        run: ([a]) => ops[name](a!, axes, keepDims),
      };
    }),
  };
}

export const opSpecs: OpSpec[] = [
  binarySpec('add', ops.add),
  binarySpec('sub', ops.sub),
  binarySpec('mul', ops.mul),
  binarySpec('div', ops.div, true),
  unarySpec('add scalar', (a) => ops.add(a, 0.75)),
  unarySpec('mul scalar', (a) => ops.mul(a, -1.5)),
  unarySpec('neg', ops.neg),
  unarySpec('exp', ops.exp),
  unarySpec('log', ops.log, 0.5, 3),
  unarySpec('sqrt', ops.sqrt, 0.5, 3),
  unarySpec('rsqrt', ops.rsqrt, 0.5, 3),
  unarySpec('square', ops.square),
  unarySpec('pow', (a) => ops.pow(a, 3)),
  unarySpec('pow fractional', (a) => ops.pow(a, 1.5), 0.5, 3),
  unarySpec('silu', ops.silu, -4, 4),
  unarySpec('sigmoid', ops.sigmoid, -4, 4),
  // relu: inputs |x| ≥ 0.1 of both signs (alternating), so finite differences never straddle the kink at 0.
  unarySpec('relu', (a) => ops.relu(ops.mul(a, ops.tensor(Float32Array.from({ length: a.size }, (_, i) => (i % 2 ? -1 : 1)), a.shape, { backend: a.backend }))), 0.1, 2),
  reduceSpec('sum'),
  reduceSpec('mean'),
  reduceSpec('max'),
  {
    name: 'reshape+permute',
    cases: fc.tuple(shapeArb(3, 4), seedArb, fc.integer({ min: 0, max: 5 })).map(([shape, seed, which]) => {
      const perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
      const full = [...shape, 1, 1].slice(0, 3);
      return {
        label: `permute ${JSON.stringify(full)} ${perms[which]}`,
        inputs: [floats(full, new Random(seed))],
        // permute, then reshape the non-contiguous result (forces a copy), then scale to mix elements
        run: ([a]) => ops.mul(ops.reshape(ops.permute(a!, perms[which]!), [-1]), ops.reshape(ops.permute(a!, perms[which]!), [-1])),
      };
    }),
  },
  {
    name: 'transpose+slice',
    cases: fc.tuple(dim(5), dim(5), seedArb, fc.nat(), fc.nat()).map(([r, c, seed, s0, s1]) => {
      const start = s0 % r;
      const end = start + 1 + (s1 % (r - start));
      return {
        label: `slice [${r},${c}] rows ${start}:${end} then transpose`,
        inputs: [floats([r, c], new Random(seed))],
        run: ([a]) => ops.exp(ops.transpose(ops.slice(a!, 0, start, end))),
      };
    }),
  },
  {
    name: 'expand',
    cases: fc.tuple(dim(4), dim(4), dim(3), seedArb).map(([r, c, b, seed]) => ({
      label: `expand [1,${c}] to [${b},${r},${c}]`,
      inputs: [floats([1, c], new Random(seed))],
      run: ([a]) => ops.square(ops.expand(a!, [b, r, c])),
    })),
  },
  {
    name: 'cat',
    cases: fc.tuple(dim(3), dim(3), dim(3), fc.integer({ min: 0, max: 1 }), seedArb).map(([a, b, c, axis, seed]) => {
      const rng = new Random(seed);
      const s1 = axis === 0 ? [a, c] : [c, a];
      const s2 = axis === 0 ? [b, c] : [c, b];
      return { label: `cat ${JSON.stringify(s1)} ${JSON.stringify(s2)} axis ${axis}`, inputs: [floats(s1, rng), floats(s2, rng)], run: ([x, y]) => ops.cat([x!, y!], axis) };
    }),
  },
  {
    name: 'matmul',
    cases: fc
      .tuple(dim(5), dim(5), dim(5), fc.boolean(), fc.boolean(), fc.integer({ min: 0, max: 3 }), dim(3), seedArb)
      .map(([m, n, k, transA, transB, batchMode, batch, seed]) => {
        const rng = new Random(seed);
        // batchMode: 0 plain, 1 both batched, 2 a batched & b shared, 3 a shared & b batched
        const aBatch = batchMode === 1 || batchMode === 2 ? [batch] : [];
        const bBatch = batchMode === 1 || batchMode === 3 ? [batch] : [];
        const aShape = [...aBatch, ...(transA ? [k, m] : [m, k])];
        const bShape = [...bBatch, ...(transB ? [n, k] : [k, n])];
        return {
          label: `matmul a ${JSON.stringify(aShape)}${transA ? 'ᵀ' : ''} b ${JSON.stringify(bShape)}${transB ? 'ᵀ' : ''}`,
          inputs: [floats(aShape, rng), floats(bShape, rng)],
          run: ([a, b]) => ops.matmul(a!, b!, { transA, transB }),
        };
      }),
  },
  {
    name: 'matmul of transposed views',
    cases: fc.tuple(dim(4), dim(4), dim(4), seedArb).map(([m, n, k, seed]) => {
      const rng = new Random(seed);
      return {
        label: `matmul transpose(a [${k},${m}]) @ transpose(b [${n},${k}])`,
        inputs: [floats([k, m], rng), floats([n, k], rng)],
        run: ([a, b]) => ops.matmul(ops.transpose(a!), ops.transpose(b!)),
      };
    }),
  },
  {
    name: 'linear',
    cases: fc.tuple(dim(3), dim(3), dim(5), dim(5), seedArb).map(([b, t, inF, outF, seed]) => {
      const rng = new Random(seed);
      return {
        label: `linear x [${b},${t},${inF}] w [${outF},${inF}] + bias`,
        inputs: [floats([b, t, inF], rng), floats([outF, inF], rng), floats([outF], rng)],
        run: ([x, w, bias]) => ops.linear(x!, w!, bias!),
      };
    }),
  },
  {
    name: 'softmax',
    cases: fc.tuple(shapeArb(3, 5), fc.boolean(), fc.nat(), seedArb).map(([shape, logSpace, axisPick, seed]) => {
      const axis = axisPick % shape.length;
      return {
        label: `${logSpace ? 'logSoftmax' : 'softmax'} ${JSON.stringify(shape)} axis ${axis}`,
        inputs: [floats(shape, new Random(seed), -3, 3)],
        run: ([a]) => (logSpace ? ops.logSoftmax(a!, axis) : ops.softmax(a!, axis)),
      };
    }),
  },
  {
    name: 'embedding',
    cases: fc.tuple(dim(6), dim(4), shapeArb(2, 4), seedArb).map(([vocab, hidden, idShape, seed]) => {
      const rng = new Random(seed);
      return {
        label: `embedding [${vocab},${hidden}] ids ${JSON.stringify(idShape)}`,
        inputs: [floats([vocab, hidden], rng), ints(idShape, rng, vocab)],
        run: ([table, ids]) => ops.embedding(table!, ids!),
      };
    }),
  },
  {
    name: 'rmsNorm',
    cases: fc.tuple(dim(4), dim(8), seedArb).map(([rows, hidden, seed]) => {
      const rng = new Random(seed);
      return {
        label: `rmsNorm [${rows},${hidden}]`,
        inputs: [floats([rows, hidden], rng), floats([hidden], rng, 0.5, 1.5)],
        run: ([x, w]) => ops.rmsNorm(x!, w!, 1e-6),
      };
    }),
  },
  {
    name: 'rope',
    cases: fc.tuple(dim(2), dim(4), dim(3), fc.integer({ min: 1, max: 4 }), seedArb).map(([b, t, h, halfDim, seed]) => {
      const rng = new Random(seed);
      const hd = halfDim * 2;
      const angles = Array.from({ length: t * halfDim }, (_, i) => Math.floor(i / halfDim) / 10000 ** ((2 * (i % halfDim)) / hd));
      const cos: InputSpec = { shape: [t, halfDim], data: Float32Array.from(angles, Math.cos) };
      const sin: InputSpec = { shape: [t, halfDim], data: Float32Array.from(angles, Math.sin) };
      return { label: `rope [${b},${t},${h},${hd}]`, inputs: [floats([b, t, h, hd], rng), cos, sin], run: ([x, c, s]) => ops.rope(x!, c!, s!) };
    }),
  },
  {
    name: 'attention',
    cases: fc
      .tuple(dim(2), dim(4), fc.integer({ min: 0, max: 3 }), fc.constantFrom(1, 2, 3), dim(2), fc.constantFrom(2, 4, 6), fc.boolean(), seedArb)
      .map(([b, tq, extra, group, kv, hd, causal, seed]) => {
        const rng = new Random(seed);
        const tk = tq + extra;
        const heads = kv * group;
        return {
          label: `attention q [${b},${tq},${heads},${hd}] kv [${b},${tk},${kv},${hd}] ${causal ? 'causal' : 'full'}`,
          inputs: [floats([b, tq, heads, hd], rng), floats([b, tk, kv, hd], rng), floats([b, tk, kv, hd], rng)],
          run: ([q, k, v]) => ops.attention(q!, k!, v!, { causal }),
        };
      }),
  },
  {
    // A LoRA adapter's read-out A·x: x [..., C] · a [C].
    name: 'rowDot',
    cases: fc.tuple(shapeArb(3, 5), seedArb).map(([shape, seed]) => {
      const rng = new Random(seed);
      return {
        label: `rowDot ${JSON.stringify(shape)}`,
        inputs: [floats(shape, rng), floats([shape.at(-1)!], rng)],
        run: ([x, a]) => ops.rowDot(x!, a!),
      };
    }),
  },
  {
    // A LoRA adapter's fused update: base [..., C] + u [...] ⊗ v [C]; odd column counts cover the WebGPU map's
    // scalar path, multiples of 4 its vector path.
    name: 'addOuter',
    cases: fc.tuple(shapeArb(3, 5), seedArb).map(([shape, seed]) => {
      const rng = new Random(seed);
      const cols = shape.at(-1)!;
      return {
        label: `addOuter ${JSON.stringify(shape)}`,
        inputs: [floats(shape, rng), floats(shape.slice(0, -1), rng), floats([cols], rng)],
        run: ([base, u, v]) => ops.addOuter(base!, u!, v!),
      };
    }),
  },
  {
    // The SAE decoder's product: (a ⊙ mask) w, with a 0/1 mask of random density (all ones and all zeros too).
    name: 'maskedMatmul',
    cases: fc.tuple(dim(5), dim(6), dim(5), fc.constantFrom(0, 0.3, 0.7, 1), seedArb).map(([rows, inner, cols, density, seed]) => {
      const rng = new Random(seed);
      const mask: InputSpec = { shape: [rows, inner], data: Float32Array.from({ length: rows * inner }, () => (rng.uniform() < density ? 1 : 0)) };
      return {
        label: `maskedMatmul [${rows},${inner}]x[${inner},${cols}] density ${density}`,
        inputs: [floats([rows, inner], rng), mask, floats([inner, cols], rng)],
        run: ([a, m, w]) => ops.maskedMatmul(a!, m!, w!),
      };
    }),
  },
  {
    name: 'swiglu',
    cases: fc.tuple(shapeArb(), seedArb).map(([shape, seed]) => {
      const rng = new Random(seed);
      return { label: `swiglu ${JSON.stringify(shape)}`, inputs: [floats(shape, rng, -3, 3), floats(shape, rng)], run: ([g, u]) => ops.swiglu(g!, u!) };
    }),
  },
  {
    name: 'crossEntropy',
    cases: fc.tuple(dim(3), dim(4), fc.integer({ min: 2, max: 7 }), seedArb).map(([b, t, vocab, seed]) => {
      const rng = new Random(seed);
      const mask: InputSpec = { shape: [b, t], data: Float32Array.from({ length: b * t }, (_, i) => (i === 0 || rng.uniform() < 0.6 ? 1 : 0)) };
      return {
        label: `crossEntropy logits [${b},${t},${vocab}] masked`,
        inputs: [floats([b, t, vocab], rng, -3, 3), ints([b, t], rng, vocab), mask],
        run: ([logits, targets, m]) => ops.crossEntropy(logits!, targets!, m!),
      };
    }),
  },
  {
    name: 'klDiv',
    cases: fc.tuple(dim(4), fc.integer({ min: 2, max: 7 }), seedArb).map(([rows, vocab, seed]) => {
      const rng = new Random(seed);
      return {
        label: `klDiv [${rows},${vocab}]`,
        inputs: [floats([rows, vocab], rng, -2, 2), floats([rows, vocab], rng, -2, 2)],
        run: ([p, q]) => ops.klDivRows(p!, q!),
      };
    }),
  },
];
