// The playground's generation loop (src/browser/playground-session.ts) in Node: its tokens are rank1
// generate's (greedy, think format), each token's activations are the A·x a full forward computes at that
// position, and ablation / steering act on (and show in) exactly the adapters named.
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { reshape, tensor } from '../src/tensor/ops.ts';
import { keep, tidy, type Tensor } from '../src/tensor/tensor.ts';
import { loadChatTemplate } from '../src/model/chat-template.ts';
import { generate } from '../src/model/generate.ts';
import { loadQwen2Checkpoint } from '../src/model/load.ts';
import type { Qwen2Model } from '../src/model/qwen2.ts';
import { randomRankOneAdapters } from '../src/model/random-model.ts';
import { loadTokenizer, type Tokenizer } from '../src/model/tokenizer.ts';
import { PlaygroundSession, type PlaygroundToken } from '../src/browser/playground-session.ts';

const toy = path.resolve(import.meta.dirname, '../models/toy');

describe('PlaygroundSession', () => {
  let model: Qwen2Model;
  let tokenizer: Tokenizer;
  let session: PlaygroundSession;
  beforeAll(async () => {
    ({ model } = await loadQwen2Checkpoint(toy, getCpuBackend()));
    model.adapters = randomRankOneAdapters(model.dims, 9, getCpuBackend(), 0.05);
    tokenizer = (await loadTokenizer(toy))!;
    session = new PlaygroundSession(model, tokenizer, await loadChatTemplate(toy));
  });

  const collect = async (request: Parameters<PlaygroundSession['generate']>[0]) => {
    const out: PlaygroundToken[] = [];
    for await (const token of session.generate(request)) out.push(token);
    return out;
  };

  /** A·x of every adapter at the last position of `ids`, from one full forward. */
  async function actsAt(ids: readonly number[]): Promise<Float32Array> {
    const captured: Tensor[] = [];
    const removers = session.hooks.map((name, i) => model.hooks.add(name, (value) => {
      captured[i] = keep(reshape(value, [-1]));
    }));
    tidy(() => model.forward(tensor(Int32Array.from(ids), [1, ids.length], { dtype: 'i32' })));
    removers.forEach((r) => r());
    const out = new Float32Array(captured.length);
    for (const [i, t] of captured.entries()) {
      const values = await t.toFloat32Array();
      out[i] = values[values.length - 1]!;
      t.dispose();
    }
    return out;
  }

  it('generates what rank1 generate does, and each token carries the A·x of the position that produced it', async () => {
    const request = { question: 'Start with 4, then (1) *9, (2) +5. What is the last digit of the result?', maxTokens: 12 };
    const tokens = await collect(request);
    const prompt = session.promptIds(request);
    expect(tokenizer.decode(prompt)).toMatch(/<\|im_start\|>think\n$/);
    const reference = await generate(model, prompt, { maxTokens: 12, stopIds: tokenizer.eosTokenIds });
    expect(tokens.map((t) => t.id)).toEqual(reference.ids);
    expect(tokens[0]!.acts).toHaveLength(7 * model.dims.layers);
    for (const k of [0, 5, 11]) {
      const want = await actsAt([...prompt, ...reference.ids.slice(0, k)]);
      const got = tokens[k]!.acts;
      for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i]!, 4);
    }
  });

  it('ablation zeroes the named adapter, steering adds to it, an unknown name is refused', async () => {
    const question = 'Start with 7, then (1) +3. What is the last digit of the result?';
    const plain = await collect({ question, maxTokens: 8 });
    const name = session.hooks[5]!;
    expect(name).toBe('model.layers.0.self_attn.v_proj'); // paper order: gate, up, down, q, k, v, o
    const ablated = await collect({ question, maxTokens: 8, ablate: [name] });
    expect(ablated.every((t) => t.acts[5] === 0)).toBe(true);
    expect(ablated[0]!.acts[4]).toBeCloseTo(plain[0]!.acts[4]!, 5); // layer 0 k_proj is before it: unchanged at the first position
    const steered = await collect({ question, maxTokens: 1, steer: { [name]: 2.5 } });
    expect(steered[0]!.acts[5]).toBeCloseTo(plain[0]!.acts[5]! + 2.5, 4);
    await expect(collect({ question, maxTokens: 1, ablate: ['model.layers.99.mlp.up_proj'] })).rejects.toThrow(/not an adapter of this model/);
  });
});
