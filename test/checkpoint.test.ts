// Hugging Face checkpoint folders: config.json validation, the expected tensor list, single-file and sharded
// checkpoints written by writeCheckpoint and loaded back on the CPU backend with their storage dtype and
// bits intact, and the errors a user sees for a broken folder.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FloatDType } from '../src/kernels/backend.ts';
import { openCheckpoint, writeCheckpoint, type LoadProgress } from '../src/model/checkpoint.ts';
import { type Qwen2Config, expectedQwen2Tensors, parseQwen2Config, qwen2ConfigToJson } from '../src/model/config.ts';
import { readSafetensorsHeader, readTensorData, writeSafetensors } from '../src/model/safetensors.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { tensor } from '../src/tensor/ops.ts';
import { Random, randomNormalArray } from '../src/tensor/random.ts';
import type { Tensor } from '../src/tensor/tensor.ts';

const cpu = getCpuBackend();
let root = '';
let counter = 0;
const freshDir = (label: string) => path.join(root, `${label}-${counter++}`);

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-checkpoint-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

// L=2, H=16, nh=4, kv=2, hd=4, I=24, V=40.
const tinyJson = (overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
  architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', hidden_size: 16, intermediate_size: 24,
  num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 40,
  max_position_embeddings: 128, rope_theta: 1_000_000, rms_norm_eps: 1e-6, tie_word_embeddings: false,
  torch_dtype: 'bfloat16', ...overrides,
});
const tinyConfig = (overrides: Record<string, unknown> = {}) => parseQwen2Config(tinyJson(overrides), 'tiny/config.json');

function randomWeights(config: Qwen2Config, dtype: FloatDType, seed: number): Map<string, Tensor> {
  const rng = new Random(seed);
  return new Map(expectedQwen2Tensors(config).map(({ name, shape }) => {
    const values = randomNormalArray(shape.reduce((n, d) => n * d, 1), rng);
    return [name, tensor(values, shape, { backend: cpu, dtype })];
  }));
}

const rawBytes = async (t: Tensor) => {
  const raw = await cpu.readRaw(t.storage);
  return new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
};

async function writeConfig(dir: string, json: Record<string, unknown>): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify(json));
}

describe('config.json', () => {
  it('parses a real Qwen2.5-0.5B config', () => {
    const config = parseQwen2Config({
      architectures: ['Qwen2ForCausalLM'], attention_dropout: 0.0, bos_token_id: 151643, eos_token_id: 151643,
      hidden_act: 'silu', hidden_size: 896, initializer_range: 0.02, intermediate_size: 4864,
      max_position_embeddings: 32768, max_window_layers: 24, model_type: 'qwen2', num_attention_heads: 14,
      num_hidden_layers: 24, num_key_value_heads: 2, rms_norm_eps: 1e-6, rope_theta: 1000000.0,
      sliding_window: 32768, tie_word_embeddings: true, torch_dtype: 'bfloat16', transformers_version: '4.40.1',
      use_cache: true, use_sliding_window: false, vocab_size: 151936,
    }, 'Qwen2.5-0.5B/config.json');
    expect(config).toEqual({
      hiddenSize: 896, intermediateSize: 4864, numHiddenLayers: 24, numAttentionHeads: 14, numKeyValueHeads: 2,
      headDim: 64, vocabSize: 151936, maxPositionEmbeddings: 32768, ropeTheta: 1e6, rmsNormEps: 1e-6,
      tieWordEmbeddings: true, torchDtype: 'bfloat16', bosTokenId: 151643, eosTokenId: 151643,
    });
    const names = expectedQwen2Tensors(config).map((t) => t.name);
    expect(names).toHaveLength(1 + 24 * 12 + 1); // tied: no lm_head
    expect(names).not.toContain('lm_head.weight');
  });

  it('applies the transformers defaults and accepts the newer "dtype" key', () => {
    const json = tinyJson();
    for (const key of ['num_key_value_heads', 'rope_theta', 'rms_norm_eps', 'tie_word_embeddings', 'torch_dtype', 'architectures']) delete json[key];
    const config = parseQwen2Config({ ...json, dtype: 'float16' }, 'x/config.json');
    expect(config).toMatchObject({ numKeyValueHeads: 4, ropeTheta: 10000, rmsNormEps: 1e-6, tieWordEmbeddings: false, torchDtype: 'float16' });
    expect(parseQwen2Config(json, 'x/config.json').torchDtype).toBe('float32');
    expect(parseQwen2Config(qwen2ConfigToJson(tinyConfig()), 'round-trip')).toEqual(tinyConfig());
  });

  it('lists every tensor with its shape', () => {
    const expected = expectedQwen2Tensors(tinyConfig());
    expect(expected).toHaveLength(1 + 2 * 12 + 2);
    const shapes = Object.fromEntries(expected.map((e) => [e.name, e.shape]));
    expect(shapes).toMatchObject({
      'model.embed_tokens.weight': [40, 16],
      'model.layers.1.input_layernorm.weight': [16],
      'model.layers.1.self_attn.q_proj.weight': [16, 16],
      'model.layers.1.self_attn.q_proj.bias': [16],
      'model.layers.1.self_attn.k_proj.weight': [8, 16],
      'model.layers.1.self_attn.k_proj.bias': [8],
      'model.layers.1.self_attn.v_proj.weight': [8, 16],
      'model.layers.1.self_attn.v_proj.bias': [8],
      'model.layers.1.self_attn.o_proj.weight': [16, 16],
      'model.layers.1.post_attention_layernorm.weight': [16],
      'model.layers.1.mlp.gate_proj.weight': [24, 16],
      'model.layers.1.mlp.up_proj.weight': [24, 16],
      'model.layers.1.mlp.down_proj.weight': [16, 24],
      'model.norm.weight': [16],
      'lm_head.weight': [40, 16],
    });
    expect(shapes).not.toHaveProperty('model.layers.0.self_attn.o_proj.bias');
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['kv heads that do not divide heads', { num_key_value_heads: 3 }, /num_key_value_heads \(3\) must divide num_attention_heads \(4\)/],
    ['heads that do not divide hidden', { num_attention_heads: 5, num_key_value_heads: 5 }, /num_attention_heads \(5\) must divide hidden_size \(16\)/],
    ['a non-integer size', { hidden_size: 'abc' }, /hidden_size must be a positive integer, got "abc"/],
    ['a zero size', { intermediate_size: 0 }, /intermediate_size must be a positive integer/],
    ['a missing vocab', { vocab_size: undefined }, /vocab_size is missing/],
    ['another architecture', { model_type: 'llama', architectures: ['LlamaForCausalLM'] }, /model_type is "llama"/],
    ['an unknown dtype', { torch_dtype: 'float64' }, /torch_dtype is "float64"/],
    ['rope scaling', { rope_scaling: { type: 'yarn', factor: 4 } }, /rope_scaling is set/],
    ['sliding window', { use_sliding_window: true }, /use_sliding_window is true/],
    ['a non-boolean tie', { tie_word_embeddings: 'yes' }, /tie_word_embeddings must be true or false/],
    ['a bad eps', { rms_norm_eps: -1 }, /rms_norm_eps must be a positive number/],
    ['a bad eos', { eos_token_id: [1, -2] }, /eos_token_id must be a non-negative integer/],
    ['an odd head dim', { hidden_size: 12, num_attention_heads: 4, num_key_value_heads: 4 }, /must be even/],
    ['a contradicting head_dim', { head_dim: 8 }, /head_dim is 8 but hidden_size \/ num_attention_heads is 4/],
  ];
  it.each(bad)('rejects %s, naming the file and field', (_label, overrides, message) => {
    const json = tinyJson(overrides);
    for (const key of Object.keys(overrides)) if (overrides[key] === undefined) delete json[key];
    expect(() => parseQwen2Config(json, 'models/tiny/config.json')).toThrow(message);
    expect(() => parseQwen2Config(json, 'models/tiny/config.json')).toThrow('models/tiny/config.json');
  });
  it('rejects a non-object config', () => {
    expect(() => parseQwen2Config([1], 'c.json')).toThrow('c.json: config is not a JSON object');
  });
});

describe('write and load checkpoints', () => {
  const layouts: [FloatDType, number][] = [['bf16', 1], ['bf16', 2], ['f32', 1], ['f32', 2], ['f16', 3]];
  it.each(layouts)('%s in %i file(s): dtypes kept, bits exact', async (dtype, shards) => {
    const config = tinyConfig();
    const weights = randomWeights(config, dtype, 7);
    const dir = freshDir(`${dtype}-${shards}`);
    await writeCheckpoint(dir, config, weights, { shards, dtype });

    const files = (await fs.readdir(dir)).sort();
    if (shards === 1) expect(files).toEqual(['config.json', 'model.safetensors']);
    else {
      const shardNames = Array.from({ length: shards }, (_, i) => `model-0000${i + 1}-of-0000${shards}.safetensors`);
      expect(files).toEqual(['config.json', 'model.safetensors.index.json', ...shardNames].sort());
      const index = JSON.parse(await fs.readFile(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
      expect(Object.keys(index.weight_map)).toHaveLength(weights.size);
      expect(new Set(Object.values(index.weight_map))).toEqual(new Set(shardNames));
      const bytesPer = dtype === 'f32' ? 4 : 2;
      expect(index.metadata.total_size).toBe([...weights.values()].reduce((n, t) => n + t.size * bytesPer, 0));
    }

    const checkpoint = await openCheckpoint(dir);
    expect(checkpoint.config).toEqual({ ...config, torchDtype: { f32: 'float32', f16: 'float16', bf16: 'bfloat16' }[dtype] });
    expect(checkpoint.warnings).toEqual([]);
    expect(checkpoint.unexpected).toEqual([]);
    expect(checkpoint.files).toHaveLength(shards);

    const progress: LoadProgress[] = [];
    const loaded = await checkpoint.loadAll(cpu, (p) => progress.push(p));
    expect([...loaded.keys()]).toEqual(expectedQwen2Tensors(config).map((e) => e.name));
    expect(progress).toHaveLength(weights.size);
    expect(progress.at(-1)!.bytesDone).toBe(checkpoint.totalBytes);
    expect(progress.every((p, i) => p.bytesTotal === checkpoint.totalBytes && (i === 0 || p.bytesDone > progress[i - 1]!.bytesDone))).toBe(true);
    for (const [name, original] of weights) {
      const t = loaded.get(name)!;
      expect(t.dtype).toBe(dtype);
      expect(t.storage.dtype).toBe(dtype);
      expect(t.storage.numel).toBe(original.size);
      expect(t.shape).toEqual(original.shape);
      expect(await rawBytes(t)).toEqual(await rawBytes(original));
    }
    const one = await checkpoint.loadTensor('model.layers.1.mlp.down_proj.weight', cpu);
    expect(await rawBytes(one)).toEqual(await rawBytes(weights.get('model.layers.1.mlp.down_proj.weight')!));
    for (const t of [...loaded.values(), one, ...weights.values()]) t.dispose();
  });

  it('converts on write when the tensors are in another dtype (f32 -> bf16 rounds, bf16 -> f32 is exact)', async () => {
    const config = tinyConfig({ torch_dtype: 'float32' });
    const f32 = randomWeights(config, 'f32', 3);
    const dir = freshDir('convert');
    await writeCheckpoint(dir, config, f32, { dtype: 'bf16' });
    const checkpoint = await openCheckpoint(dir);
    expect(checkpoint.config.torchDtype).toBe('bfloat16');
    const name = 'model.embed_tokens.weight';
    const bf16 = await checkpoint.loadTensor(name, cpu);
    expect(bf16.dtype).toBe('bf16');
    const expected = tensor(await f32.get(name)!.toFloat32Array(), [40, 16], { backend: cpu, dtype: 'bf16' });
    expect(await rawBytes(bf16)).toEqual(await rawBytes(expected));

    const back = freshDir('widen');
    const bf16Weights = await checkpoint.loadAll(cpu);
    await writeCheckpoint(back, checkpoint.config, bf16Weights, { dtype: 'f32' });
    const widened = await (await openCheckpoint(back)).loadTensor(name, cpu);
    expect(widened.dtype).toBe('f32');
    expect(await widened.toFloat32Array()).toEqual(await bf16.toFloat32Array());
  });

  it('tied models: no lm_head written; an extra lm_head.weight is tolerated, other extras are warned about', async () => {
    const config = tinyConfig({ tie_word_embeddings: true });
    const weights = randomWeights(config, 'bf16', 11);
    expect(weights.has('lm_head.weight')).toBe(false);
    const dir = freshDir('tied');
    await writeCheckpoint(dir, config, weights);
    expect((await openCheckpoint(dir)).unexpected).toEqual([]);

    // Re-write the file by hand with an lm_head copy and a rotary buffer that older exports carry.
    const file = path.join(dir, 'model.safetensors');
    const header = await readSafetensorsHeader(file);
    const entries = await Promise.all([...header.tensors.values()].map(async (e) => ({
      name: e.name, dtype: e.dtype as 'BF16', shape: e.shape, data: await readTensorData(file, e),
    })));
    const embed = entries.find((e) => e.name === 'model.embed_tokens.weight')!;
    entries.push({ ...embed, name: 'lm_head.weight' });
    entries.push({ name: 'model.layers.0.self_attn.rotary_emb.inv_freq', dtype: 'BF16', shape: [2], data: new Uint16Array(2) });
    await writeSafetensors(file, entries);
    const checkpoint = await openCheckpoint(dir);
    expect(checkpoint.unexpected).toEqual(['model.layers.0.self_attn.rotary_emb.inv_freq']);
    expect(checkpoint.warnings.join('\n')).toMatch(/1 tensors a Qwen2 model does not use.*rotary_emb\.inv_freq/);
    expect((await checkpoint.loadAll(cpu)).has('lm_head.weight')).toBe(false);
  });

  it('replaces the other layout when re-written into the same folder', async () => {
    const config = tinyConfig();
    const dir = freshDir('relayout');
    await writeCheckpoint(dir, config, randomWeights(config, 'bf16', 1), { shards: 3 });
    await writeCheckpoint(dir, config, randomWeights(config, 'bf16', 2), { shards: 2 });
    expect((await fs.readdir(dir)).sort()).toEqual([
      'config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json',
    ]);
    await writeCheckpoint(dir, config, randomWeights(config, 'bf16', 3));
    expect((await fs.readdir(dir)).sort()).toEqual(['config.json', 'model.safetensors']);
    expect((await openCheckpoint(dir)).files).toHaveLength(1);
  });

  it('refuses to write a set of tensors that does not match the config', async () => {
    const config = tinyConfig();
    const weights = randomWeights(config, 'bf16', 5);
    const dir = freshDir('badwrite');
    const missing = new Map(weights);
    missing.delete('model.norm.weight');
    await expect(writeCheckpoint(dir, config, missing)).rejects.toThrow(/missing 1 tensors: model\.norm\.weight/);
    const wrong = new Map(weights);
    wrong.set('model.norm.weight', tensor(new Float32Array(8), [8], { backend: cpu }));
    await expect(writeCheckpoint(dir, config, wrong)).rejects.toThrow(/"model\.norm\.weight" has shape \[8\] but the config implies \[16\]/);
    await expect(writeCheckpoint(dir, config, weights, { shards: 0 })).rejects.toThrow(/shards must be an integer/);
  });
});

describe('broken checkpoint folders', () => {
  async function writeTiny(label: string, shards = 1, overrides: Record<string, unknown> = {}): Promise<string> {
    const dir = freshDir(label);
    const config = tinyConfig(overrides);
    await writeCheckpoint(dir, config, randomWeights(config, 'bf16', 9), { shards });
    return dir;
  }

  it('names the folder, the count and the first missing tensors', async () => {
    const dir = await writeTiny('missing');
    // Claim 3 layers: layer 2's 12 tensors are absent.
    await writeConfig(dir, tinyJson({ num_hidden_layers: 3 }));
    await expect(openCheckpoint(dir)).rejects.toThrow(
      new RegExp(`checkpoint ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} .*is missing 12 of 39 tensors the config implies: model\\.layers\\.2\\.input_layernorm\\.weight, .*\\(7 more\\)`),
    );
  });

  it('names the file, tensor, expected and actual shapes on a mismatch', async () => {
    const dir = await writeTiny('shape', 2);
    await writeConfig(dir, tinyJson({ vocab_size: 41 }));
    const error = await openCheckpoint(dir).catch((err: Error) => err);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/model-0000\d-of-00002\.safetensors: tensor "model\.embed_tokens\.weight" has shape \[40, 16\] but .*config\.json implies \[41, 16\]/);
  });

  it('names the index and the missing shard', async () => {
    const dir = await writeTiny('noshard', 2);
    await fs.rm(path.join(dir, 'model-00002-of-00002.safetensors'));
    await expect(openCheckpoint(dir)).rejects.toThrow(/model\.safetensors\.index\.json: shard model-00002-of-00002\.safetensors \(holding \d+ tensors, e\.g\. ".+"\) does not exist/);
  });

  it('checks that every mapped tensor is in its shard, and that shards stay in the folder', async () => {
    const dir = await writeTiny('badmap', 2);
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(await fs.readFile(indexFile, 'utf8'));
    const good = JSON.stringify(index);
    index.weight_map['model.norm.weight'] = 'model-00001-of-00002.safetensors';
    index.weight_map['model.embed_tokens.weight'] = 'model-00002-of-00002.safetensors';
    await fs.writeFile(indexFile, JSON.stringify(index));
    await expect(openCheckpoint(dir)).rejects.toThrow(/maps tensor "model\.(norm|embed_tokens)\.weight" to model-0000\d-of-00002\.safetensors, but .* has no such tensor/);

    const escaping = JSON.parse(good);
    escaping.weight_map['model.norm.weight'] = '../../etc/passwd';
    await fs.writeFile(indexFile, JSON.stringify(escaping));
    await expect(openCheckpoint(dir)).rejects.toThrow(/weight_map entry for tensor "model\.norm\.weight" is not a file name/);
    await fs.writeFile(indexFile, '{"weight_map": [');
    await expect(openCheckpoint(dir)).rejects.toThrow(/model\.safetensors\.index\.json is not valid JSON/);
  });

  it('names config.json and the field on a bad config', async () => {
    const dir = await writeTiny('badconfig');
    await writeConfig(dir, tinyJson({ num_key_value_heads: 3 }));
    await expect(openCheckpoint(dir)).rejects.toThrow(`${path.join(dir, 'config.json')}: num_key_value_heads (3) must divide`);
    await fs.rm(path.join(dir, 'config.json'));
    await expect(openCheckpoint(dir)).rejects.toThrow(/checkpoint config .*config\.json cannot be read/);
  });

  it('names a corrupt weight file and a folder without weights', async () => {
    const dir = await writeTiny('corrupt');
    const file = path.join(dir, 'model.safetensors');
    await fs.truncate(file, 100);
    await expect(openCheckpoint(dir)).rejects.toThrow(file);
    await fs.rm(file);
    await fs.writeFile(path.join(dir, 'pytorch_model.bin'), 'x');
    await expect(openCheckpoint(dir)).rejects.toThrow(/has neither model\.safetensors nor model\.safetensors\.index\.json \(only PyTorch/);
    await expect(openCheckpoint(path.join(dir, 'nope'))).rejects.toThrow(/is not a directory/);
  });

  it('refuses integer weights', async () => {
    const dir = await writeTiny('intweights');
    const file = path.join(dir, 'model.safetensors');
    const header = await readSafetensorsHeader(file);
    await writeSafetensors(file, await Promise.all([...header.tensors.values()].map(async (e) => e.name === 'model.norm.weight'
      ? { name: e.name, dtype: 'I32' as const, shape: e.shape, data: new Int32Array(e.numel) }
      : { name: e.name, dtype: 'BF16' as const, shape: e.shape, data: await readTensorData(file, e) })));
    await expect(openCheckpoint(dir)).rejects.toThrow(/tensor "model\.norm\.weight" has dtype I32; weights must be F32, F16 or BF16/);
  });
});
