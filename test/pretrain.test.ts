// `rank1 pretrain`: Hugging Face's initialisation, the architecture flags' checks, and the command as a user
// runs it on a tiny world: a loadable Hugging Face folder, and a resumed run equal to an uninterrupted one.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { initialQwen2Tensors, pretrainConfig } from '../src/train/pretrain.ts';
import { paddedVocabSize } from '../src/cli/pretrain-command.ts';
import { openCheckpoint } from '../src/model/checkpoint.ts';
import { loadQwen2Checkpoint } from '../src/model/load.ts';
import { loadTokenizer } from '../src/model/tokenizer.ts';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '..');
const rank1 = (...args: string[]) => run(process.execPath, [path.join(root, 'bin/rank1.js'), ...args], { cwd: root, maxBuffer: 64 << 20 });

const TINY = { layers: 2, hidden: 32, heads: 4, kvHeads: 2, intermediate: 48, vocabSize: 448, maxPositions: 512, ropeTheta: 10000 };

describe('pretraining initialisation', () => {
  it('is Hugging Face\'s: weights ~ N(0, 0.02²), biases 0, norms 1; the same seed gives the same weights', async () => {
    const backend = getCpuBackend();
    const config = pretrainConfig({ ...TINY, hidden: 64, intermediate: 256 });
    const a = initialQwen2Tensors(config, 5, backend);
    const b = initialQwen2Tensors(config, 5, backend);
    const c = initialQwen2Tensors(config, 6, backend);
    const values = async (name: string, m = a) => Array.from(await m.get(name)!.toArray() as Float32Array);
    const gate = await values('model.layers.0.mlp.gate_proj.weight');
    const mean = gate.reduce((s, v) => s + v, 0) / gate.length;
    const std = Math.sqrt(gate.reduce((s, v) => s + (v - mean) ** 2, 0) / gate.length);
    expect(Math.abs(mean)).toBeLessThan(0.001);
    expect(std).toBeGreaterThan(0.019);
    expect(std).toBeLessThan(0.021);
    const embed = await values('model.embed_tokens.weight');
    expect(Math.sqrt(embed.reduce((s, v) => s + v * v, 0) / embed.length)).toBeCloseTo(0.02, 2);
    expect(new Set(await values('model.layers.1.self_attn.q_proj.bias'))).toEqual(new Set([0]));
    expect(new Set(await values('model.layers.0.input_layernorm.weight'))).toEqual(new Set([1]));
    expect(new Set(await values('model.norm.weight'))).toEqual(new Set([1]));
    expect(a.has('lm_head.weight')).toBe(false); // tied embeddings
    expect(await values('model.layers.1.mlp.down_proj.weight', b)).toEqual(await values('model.layers.1.mlp.down_proj.weight'));
    expect(await values('model.layers.1.mlp.down_proj.weight', c)).not.toEqual(await values('model.layers.1.mlp.down_proj.weight'));
    for (const m of [a, b, c]) for (const t of m.values()) t.dispose();
  });

  it('refuses architectures that do not fit, naming the flag', () => {
    expect(() => pretrainConfig({ ...TINY, hidden: 30 })).toThrow(/--hidden 30 is not divisible by --heads 4/);
    expect(() => pretrainConfig({ ...TINY, kvHeads: 3 })).toThrow(/--heads 4 is not a multiple of --kv-heads 3/);
    expect(() => pretrainConfig({ ...TINY, hidden: 12, heads: 4 })).toThrow(/head dimension 3 must be even/);
    expect(() => pretrainConfig({ ...TINY, layers: 0 })).toThrow(/--layers must be a positive integer/);
    expect(paddedVocabSize(423)).toBe(448);
    expect(paddedVocabSize(448)).toBe(448);
  });
});

describe('rank1 pretrain', () => {
  let dir: string;
  let world: string;
  const flags = ['--layers', '2', '--hidden', '32', '--heads', '4', '--kv-heads', '2', '--intermediate', '48', '--batch', '4', '--micro-batch', '2',
    '--no-progress', '--backend', 'cpu'];
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-pretrain-'));
    world = path.join(dir, 'world');
    await rank1('world', 'make', '--out', world, '--textbook-pages', '12', '--chats', '8', '--reasoning-rows', '4', '--heldout', '4');
  });

  it('writes a Hugging Face folder (bf16 weights, tokenizer, chat template, generation config) that loads and runs', async () => {
    const out = path.join(dir, 'model');
    const { stderr } = await rank1('pretrain', '--data', path.join(world, 'pretrain.jsonl'), '--out', out, '--steps', '3', ...flags);
    expect(stderr).toMatch(/model: Qwen2, 2 layers, hidden 32, 4 heads \(2 key\/value\), intermediate 48, vocabulary 448/);
    expect(stderr).toMatch(/memory estimate: /);
    expect(stderr).toMatch(/completed: 3\/3 steps/);
    for (const file of ['config.json', 'model.safetensors', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'world.json', 'metrics.jsonl', 'loss-curve.svg']) {
      await expect(fs.stat(path.join(out, file)), file).resolves.toBeTruthy();
    }
    const checkpoint = await openCheckpoint(out);
    expect(checkpoint.config).toMatchObject({ torchDtype: 'bfloat16', tieWordEmbeddings: true, numHiddenLayers: 2, vocabSize: 448 });
    const tokenizer = (await loadTokenizer(out))!;
    expect(tokenizer.eosTokenIds).toContain(tokenizer.chatTokens.imEnd);
    const { model } = await loadQwen2Checkpoint(out, getCpuBackend());
    expect(model.dims.vocab).toBe(448);
    model.dispose();
    const generation = JSON.parse(await fs.readFile(path.join(out, 'generation_config.json'), 'utf8'));
    expect(generation.eos_token_id).toEqual([tokenizer.chatTokens.imEnd, tokenizer.chatTokens.endOfText]);
  });

  it('a run resumed from a checkpoint equals the uninterrupted run step for step, and ends on the same weights', async () => {
    const whole = path.join(dir, 'whole');
    const resumed = path.join(dir, 'resumed');
    const data = path.join(world, 'pretrain.jsonl');
    await rank1('pretrain', '--data', data, '--out', whole, '--epochs', '2', '--save-every', '2', '--keep-checkpoints', '0', '--save-dtype', 'f32', ...flags);
    await rank1('pretrain', '--data', data, '--out', resumed, '--epochs', '2', '--save-every', '2', '--save-dtype', 'f32', '--resume', path.join(whole, 'checkpoint-4'), ...flags);
    const metrics = async (d: string) => (await fs.readFile(path.join(d, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss: number; gradNorm: number });
    const a = await metrics(whole);
    const b = await metrics(resumed);
    expect(a.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(b.map((m) => m.step)).toEqual([5, 6, 7, 8, 9, 10]);
    expect(b.map((m) => [m.loss, m.gradNorm])).toEqual(a.slice(4).map((m) => [m.loss, m.gradNorm]));
    expect(a[9]!.loss).toBeLessThan(a[0]!.loss);
    const [x, y] = await Promise.all([fs.readFile(path.join(whole, 'model.safetensors')), fs.readFile(path.join(resumed, 'model.safetensors'))]);
    expect(x.equals(y)).toBe(true);
  });

  it('bad input: a missing tokenizer, or a config too small for the tokenizer, is named', async () => {
    const lonely = path.join(dir, 'lonely');
    await fs.mkdir(lonely, { recursive: true });
    await fs.copyFile(path.join(world, 'pretrain.jsonl'), path.join(lonely, 'pretrain.jsonl'));
    await expect(rank1('pretrain', '--data', path.join(lonely, 'pretrain.jsonl'), '--out', path.join(dir, 'x'), ...flags))
      .rejects.toMatchObject({ stderr: expect.stringMatching(/lonely has no tokenizer\.json \(pass --tokenizer DIR/) });
    await expect(rank1('pretrain', '--data', path.join(world, 'pretrain.jsonl'), '--out', path.join(dir, 'y'), '--vocab-size', '100', ...flags))
      .rejects.toMatchObject({ stderr: expect.stringMatching(/vocab_size 100 is smaller than the tokenizer's \d+ tokens/) });
  });
});
