// Fused causal grouped-query attention at Qwen2-0.5B's head layout: q [B, T, nh, hd], k/v [B, T, kv, hd],
// B = 1, nh = 14, kv = 2, hd = 64.
import { Random, attention, backward, randomNormalArray, tensor, zeroGrad, type Backend } from '../../src/tensor/index.ts';
import type { CaseSpec } from '../harness.ts';
import { rank1Implementation, readFirstElement } from './rank1.ts';

export const attentionShape = { batch: 1, heads: 14, kvHeads: 2, headDim: 64 } as const;

/**
 * Causal forward: QKᵀ and PV are 2·T·T·hd each per head, and the mask halves the useful work:
 * 4·B·nh·T²·hd / 2. The backward recomputes P and does four more such products (dV, dP, dQ, dK),
 * 2.5× the forward, so forward+backward counts 3.5× the forward.
 */
export function attentionFlops(tokens: number, withBackward: boolean): number {
  const { batch, heads, headDim } = attentionShape;
  const forward = (4 * batch * heads * tokens * tokens * headDim) / 2;
  return withBackward ? forward * 3.5 : forward;
}

export function rank1AttentionCase(backend: Backend, tokens: number, withBackward: boolean): CaseSpec {
  const { batch, heads, kvHeads, headDim } = attentionShape;
  const rng = new Random(2000 + tokens);
  const qData = randomNormalArray(batch * tokens * heads * headDim, rng);
  const kData = randomNormalArray(batch * tokens * kvHeads * headDim, rng);
  const vData = randomNormalArray(batch * tokens * kvHeads * headDim, rng);
  const doutData = withBackward ? randomNormalArray(qData.length, rng) : null;
  return {
    group: 'attention',
    name: `attention ${withBackward ? 'fwd+bwd' : 'fwd'} T=${tokens}`,
    size: tokens,
    impl: rank1Implementation(backend),
    flops: attentionFlops(tokens, withBackward),
    // Query 0 sees only key 0 under the causal mask, so out[0, 0, 0, :] = v[0, 0, 0, :].
    expected: withBackward ? undefined : { value: vData[0]!, tolerance: 1e-5 },
    async setup() {
      const options = { backend, requiresGrad: withBackward };
      const q = tensor(qData, [batch, tokens, heads, headDim], options);
      const k = tensor(kData, [batch, tokens, kvHeads, headDim], options);
      const v = tensor(vData, [batch, tokens, kvHeads, headDim], options);
      const dout = doutData ? tensor(doutData, [batch, tokens, heads, headDim], { backend }) : null;
      return {
        async iterate() {
          const out = attention(q, k, v);
          try {
            if (!dout) return await readFirstElement(out);
            backward(out, { grad: dout });
            // A read waits for everything queued before it, so reading dq also waits for dk and dv.
            const first = await readFirstElement(q.grad!);
            zeroGrad([q, k, v]);
            return first;
          } finally {
            out.dispose();
          }
        },
        dispose() {
          zeroGrad([q, k, v]);
          for (const t of [q, k, v, dout]) t?.dispose();
        },
      };
    },
  };
}
