// The readable CPU attention: scalar loops with f64 accumulators, one query row at a time. The blocked kernel
// in attention.ts computes the same thing with matmuls; this version is kept as its documentation and as the
// tests' oracle (llm.c's dev/cuda: the fast kernel sits beside the simple one it is checked against).
import type { AttentionParams, Storage } from '../backend.ts';
import { CpuStorage, f32Of } from './storage.ts';

// attentionReference: q [B, T, nh, hd], k/v [B, S, kv, hd] -> out [B, T, nh, hd], lse [B, nh, T].
// Query head h reads key/value head floor(h / (nh / kv)) (GQA). One score row of S floats at a time:
// memory O(S), never a T x S matrix.
export function attentionReference(q: Storage, k: Storage, v: Storage, p: AttentionParams) {
  const query = f32Of(q, 'attention q');
  const key = f32Of(k, 'attention k');
  const value = f32Of(v, 'attention v');
  const { batch, tq, tk, heads, kvHeads, headDim, scale, causalOffset } = p;
  const group = heads / kvHeads;
  const out = new Float32Array(batch * tq * heads * headDim);
  const lse = new Float32Array(batch * heads * tq);
  const scores = new Float64Array(tk);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / group);
      for (let t = 0; t < tq; t++) {
        const qBase = ((b * tq + t) * heads + h) * headDim;
        const visible = Math.min(tk, Math.max(0, Math.floor(t + causalOffset) + 1));
        let max = -Infinity;
        for (let s = 0; s < visible; s++) {
          const kBase = ((b * tk + s) * kvHeads + kvh) * headDim;
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += query[qBase + d]! * key[kBase + d]!;
          scores[s] = dot * scale;
          if (scores[s]! > max) max = scores[s]!;
        }
        let sum = 0;
        for (let s = 0; s < visible; s++) {
          scores[s] = Math.exp(scores[s]! - max);
          sum += scores[s]!;
        }
        lse[(b * heads + h) * tq + t] = visible > 0 ? max + Math.log(sum) : -Infinity;
        for (let d = 0; d < headDim; d++) {
          let acc = 0;
          for (let s = 0; s < visible; s++) acc += scores[s]! * value[((b * tk + s) * kvHeads + kvh) * headDim + d]!;
          out[qBase + d] = visible > 0 ? acc / sum : 0;
        }
      }
    }
  }
  return { out: new CpuStorage('f32', out) as Storage, lse: new CpuStorage('f32', lse) as Storage };
}

// attentionBackwardReference: recompute p = exp(score - lse) row by row.
//   dv_s += p_s dout;  dp_s = dout . v_s;  ds_s = p_s (dp_s - dout . out);  dq += scale ds_s k_s;  dk_s += scale ds_s q.
export function attentionBackwardReference(
  q: Storage, k: Storage, v: Storage, out: Storage, lse: Storage, dout: Storage, p: AttentionParams,
) {
  const query = f32Of(q, 'attentionBackward q');
  const key = f32Of(k, 'attentionBackward k');
  const value = f32Of(v, 'attentionBackward v');
  const output = f32Of(out, 'attentionBackward out');
  const logSumExp = f32Of(lse, 'attentionBackward lse');
  const grad = f32Of(dout, 'attentionBackward dout');
  const { batch, tq, tk, heads, kvHeads, headDim, scale, causalOffset } = p;
  const group = heads / kvHeads;
  const dq = new Float32Array(query.length);
  const dk = new Float64Array(key.length);
  const dv = new Float64Array(value.length);
  const dqRow = new Float64Array(headDim);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / group);
      for (let t = 0; t < tq; t++) {
        const qBase = ((b * tq + t) * heads + h) * headDim;
        const visible = Math.min(tk, Math.max(0, Math.floor(t + causalOffset) + 1));
        const rowLse = logSumExp[(b * heads + h) * tq + t]!;
        let outDotGrad = 0;
        for (let d = 0; d < headDim; d++) outDotGrad += output[qBase + d]! * grad[qBase + d]!;
        dqRow.fill(0);
        for (let s = 0; s < visible; s++) {
          const kBase = ((b * tk + s) * kvHeads + kvh) * headDim;
          let dot = 0;
          let gradDotValue = 0;
          for (let d = 0; d < headDim; d++) {
            dot += query[qBase + d]! * key[kBase + d]!;
            gradDotValue += grad[qBase + d]! * value[kBase + d]!;
          }
          const prob = Math.exp(dot * scale - rowLse);
          const dScore = prob * (gradDotValue - outDotGrad) * scale;
          for (let d = 0; d < headDim; d++) {
            dv[kBase + d]! += prob * grad[qBase + d]!;
            dqRow[d]! += dScore * key[kBase + d]!;
            dk[kBase + d]! += dScore * query[qBase + d]!;
          }
        }
        for (let d = 0; d < headDim; d++) dq[qBase + d] = dqRow[d]!;
      }
    }
  }
  return {
    dq: new CpuStorage('f32', dq) as Storage,
    dk: new CpuStorage('f32', Float32Array.from(dk)) as Storage,
    dv: new CpuStorage('f32', Float32Array.from(dv)) as Storage,
  };
}
