// The rank1 command as a user runs it: real processes on checkpoint folders written by the fixture script.
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { syntheticRows, tokensRowRecord } from '../src/train/data-synthetic.ts';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '..');
const fixtures = path.join(root, 'test/fixtures/qwen2');
const rank1 = (...args: string[]) => run(process.execPath, [path.join(root, 'bin/rank1.js'), ...args], { cwd: root, maxBuffer: 64 << 20 });

async function failure(...args: string[]): Promise<string> {
  try {
    await rank1(...args);
  } catch (error) {
    const e = error as { code: number; stderr: string };
    expect(e.code).toBe(1);
    return e.stderr;
  }
  throw new Error(`rank1 ${args.join(' ')} succeeded but should have failed`);
}

describe('rank1 CLI', () => {
  it('info describes the architecture, adapters and memory', async () => {
    const { stdout } = await rank1('info', '--model', path.join(fixtures, 'tiny-f32'), '--json');
    const info = JSON.parse(stdout);
    expect(info).toMatchObject({ architecture: 'Qwen2ForCausalLM', layers: 2, adapters: 14, hidden: 32 });
    expect(info.parameters).toBeGreaterThan(0);
    expect(info.memory.cpu.weights).toBe(info.weightBytes);
  });

  it('logits prints the {ids, logits, acts} contract and --ablate changes only what it should', async () => {
    const model = path.join(fixtures, 'tiny-f32');
    const adapter = path.join(fixtures, 'adapter-tiny-f32');
    const plain = JSON.parse((await rank1('logits', '--model', model, '--ids', '1,2,3', '--backend', 'cpu')).stdout);
    expect(plain.ids).toEqual([1, 2, 3]);
    expect(plain.logits).toHaveLength(3);
    expect(plain.logits[0]).toHaveLength(64);
    expect(plain.acts).toBeUndefined();
    const adapted = JSON.parse((await rank1('logits', '--model', model, '--adapter', adapter, '--ids', '1,2,3', '--backend', 'cpu')).stdout);
    expect(Object.keys(adapted.acts)).toHaveLength(14);
    expect(Object.keys(adapted.acts)[0]).toBe('model.layers.0.mlp.gate_proj');
    expect(adapted.acts['model.layers.1.self_attn.q_proj']).toHaveLength(3);
    const ablated = JSON.parse((await rank1('logits', '--model', model, '--adapter', adapter, '--ids', '1,2,3', '--ablate', 'model.layers.1.mlp.down_proj', '--backend', 'cpu')).stdout);
    // The recorded activation is the raw A·x even for the ablated adapter; the logits change.
    expect(ablated.acts['model.layers.1.mlp.down_proj']).toEqual(adapted.acts['model.layers.1.mlp.down_proj']);
    expect(ablated.logits).not.toEqual(adapted.logits);
    expect(adapted.logits).not.toEqual(plain.logits);
    // Selections as rank1 eval --ablate takes them: a group is exactly its module paths.
    const mlpPaths = Object.keys(adapted.acts).filter((name) => name.includes('.mlp.')).join(',');
    const byGroup = JSON.parse((await rank1('logits', '--model', model, '--adapter', adapter, '--ids', '1,2,3', '--ablate', 'mlp', '--backend', 'cpu')).stdout);
    const byPaths = JSON.parse((await rank1('logits', '--model', model, '--adapter', adapter, '--ids', '1,2,3', '--ablate', mlpPaths, '--backend', 'cpu')).stdout);
    expect(byGroup.logits).toEqual(byPaths.logits);
    expect(byGroup.logits).not.toEqual(adapted.logits);
  });

  it('reports bad input clearly, naming the value at fault', async () => {
    const model = path.join(fixtures, 'tiny-f32');
    expect(await failure('logits', '--model', model, '--ids', '1,2,500', '--backend', 'cpu')).toMatch(/token id 500 at position 2 is outside the vocabulary \[0, 64\)/);
    expect(await failure('logits', '--model', model, '--ids', '1,x', '--backend', 'cpu')).toMatch(/--ids must be comma-separated non-negative integers/);
    expect(await failure('logits', '--model', model, '--adapter', path.join(fixtures, 'adapter-tiny-f32'), '--ids', '1', '--ablate', 'model.layers.9.mlp.up_proj', '--backend', 'cpu'))
      .toMatch(/--ablate: adapter .*adapter-tiny-f32 has no adapter at model\.layers\.9\.mlp\.up_proj/);
    expect(await failure('info', '--model', path.join(fixtures, 'does-not-exist'))).toMatch(/does-not-exist/);
    expect(await failure('logits', '--model', model, '--text', 'hello', '--backend', 'cpu')).toMatch(/no tokenizer.json/);
  });

  it('lists hook points', async () => {
    const { stdout } = await rank1('hooks', '--model', path.join(fixtures, 'tiny-f32'), '--kind', 'adapter');
    const lines = stdout.trim().split('\n');
    expect(lines).toHaveLength(14);
    expect(lines[3]).toMatch(/^model\.layers\.0\.self_attn\.q_proj\t\[B, T\]/);
  });
});

describe('rank1 train', () => {
  it('trains, stops cleanly on Ctrl-C with a checkpoint, and resumes to completion', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-cli-train-'));
    try {
      const data = path.join(dir, 'data.jsonl');
      await fs.writeFile(data, syntheticRows(64, 3, { vocabSize: 64 }).map((r) => JSON.stringify(tokensRowRecord(r))).join('\n'));
      const out = path.join(dir, 'out');
      const args = ['train', '--model', path.join(fixtures, 'tiny-f32'), '--data', data, '--out', out, '--batch', '4', '--micro-batch', '2',
        '--epochs', '4', '--save-every', '1000', '--backend', 'cpu', '--no-progress'];
      const child = spawn(process.execPath, [path.join(root, 'bin/rank1.js'), ...args], { cwd: root });
      let stderr = '';
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        if (/step 3\/64/.test(stderr) && !child.killed) child.kill('SIGINT');
      });
      expect(await exited).toBe(0);
      expect(stderr).toMatch(/interrupted: saved step \d+ to/);
      const checkpoints = (await fs.readdir(out)).filter((f) => f.startsWith('checkpoint-'));
      expect(checkpoints).toHaveLength(1);
      const stoppedAt = Number(checkpoints[0]!.slice('checkpoint-'.length));
      expect(stoppedAt).toBeGreaterThanOrEqual(3);
      expect(stoppedAt).toBeLessThan(64);
      const resumed = await rank1(...args, '--resume', out);
      expect(resumed.stderr).toMatch(new RegExp(`resumed from .*checkpoint-${stoppedAt} at step ${stoppedAt}/64`));
      expect(resumed.stderr).toMatch(/completed: 64\/64 steps/);
      const metrics = (await fs.readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n');
      expect(metrics).toHaveLength(64);
      expect(JSON.parse(await fs.readFile(path.join(out, 'adapter_config.json'), 'utf8')).peft_type).toBe('LORA');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a run that does not fit the memory limit', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-cli-train-'));
    try {
      const data = path.join(dir, 'data.jsonl');
      await fs.writeFile(data, syntheticRows(4, 3, { vocabSize: 64 }).map((r) => JSON.stringify(tokensRowRecord(r))).join('\n'));
      const message = await failure('train', '--model', path.join(fixtures, 'tiny-f32'), '--data', data, '--out', path.join(dir, 'out'), '--memory-limit', '0.0001', '--backend', 'cpu');
      expect(message).toMatch(/not enough memory: training needs about .* but 104.86 KiB is available/);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('rank1 eval', () => {
  it('scores a JSONL benchmark end to end, resumes, and prints Table 1', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-cli-eval-'));
    try {
      const { getCpuBackend } = await import('../src/tensor/engine.ts');
      const { tinyQwen2Config, writeRandomQwen2Checkpoint } = await import('../src/model/random-model.ts');
      const model = path.join(dir, 'model');
      await writeRandomQwen2Checkpoint(model, tinyQwen2Config({ vocabSize: 128 }), 1, getCpuBackend(), { dtype: 'bf16' });
      for (const f of ['tokenizer.json', 'tokenizer_config.json']) await fs.copyFile(path.join(root, 'test/fixtures/eval/char-tokenizer', f), path.join(model, f));
      const out = path.join(dir, 'results.jsonl');
      const args = ['eval', '--model', model, '--bench', 'math500', '--data', path.join(root, 'test/fixtures/eval/math-sample.jsonl'), '--max-tokens', '6', '--out', out, '--backend', 'cpu'];
      const first = await rank1(...args);
      expect(JSON.parse(first.stdout)).toMatchObject({ bench: 'math500', n: 3, generated: 3 });
      const rows = (await fs.readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
      expect(rows).toHaveLength(3);
      expect(rows[0]).toMatchObject({ index: 0, gold: '2', tokensGenerated: 6 });
      const again = await rank1(...args);
      expect(JSON.parse(again.stdout)).toMatchObject({ n: 3, generated: 0 });
      // Decoded together (the default --batch 8) or one at a time: the same outputs.
      const single = path.join(dir, 'single.jsonl');
      await rank1(...args.slice(0, -4), '--out', single, '--batch', '1', '--backend', 'cpu');
      const strip = (rows: { seconds?: number }[]) => rows.map(({ seconds: _, ...rest }) => rest);
      const singleRows = (await fs.readFile(single, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
      expect(strip(singleRows)).toEqual(strip(rows));
      const table = await rank1('eval', '--compare', `math500:base=${out},lora=${out},full=${out}`);
      expect(table.stdout).toMatch(/Base\s+0\.0/);
      expect(table.stdout).toMatch(/% recovery\s+n\/a/);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('rank1 tokenize, generate and train --full on a model with a tokenizer', () => {
  it('tokenizes (plain and chat), generates with streaming and steering, and writes a full checkpoint', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-cli-gen-'));
    try {
      const { getCpuBackend } = await import('../src/tensor/engine.ts');
      const { tinyQwen2Config, writeRandomQwen2Checkpoint } = await import('../src/model/random-model.ts');
      const model = path.join(dir, 'model');
      await writeRandomQwen2Checkpoint(model, tinyQwen2Config({ vocabSize: 128 }), 2, getCpuBackend(), { dtype: 'bf16' });
      for (const f of ['tokenizer.json', 'tokenizer_config.json']) await fs.copyFile(path.join(root, 'test/fixtures/eval/char-tokenizer', f), path.join(model, f));
      const plain = JSON.parse((await rank1('tokenize', '--model', model, '--text', 'abc')).stdout);
      expect(plain.ids).toHaveLength(3);
      const chat = JSON.parse((await rank1('tokenize', '--model', model, '--text', 'abc', '--chat')).stdout);
      expect(chat.ids.length).toBeGreaterThan(20); // system prompt and turn markers
      expect(chat.ids.slice(-3 - 12)).toEqual(expect.arrayContaining(plain.ids));

      const generated = await rank1('generate', '--model', model, '--prompt', 'hello', '--max-tokens', '5', '--backend', 'cpu');
      expect(generated.stderr).toMatch(/\[\d+ tokens, stopped by (max_tokens|stop_id)\]/);
      const again = await rank1('generate', '--model', model, '--prompt', 'hello', '--max-tokens', '5', '--backend', 'cpu');
      expect(again.stdout).toBe(generated.stdout); // greedy is deterministic
      expect(await failure('generate', '--model', model, '--prompt', 'hi', '--steer', 'model.layers.0.mlp.up_proj=50', '--backend', 'cpu')).toMatch(/--steer needs an adapter/);

      const data = path.join(dir, 'data.jsonl');
      await fs.writeFile(data, syntheticRows(8, 3, { vocabSize: 64 }).map((r) => JSON.stringify(tokensRowRecord(r))).join('\n'));
      const out = path.join(dir, 'full');
      await rank1('train', '--model', model, '--data', data, '--out', out, '--full', '--batch', '4', '--micro-batch', '4', '--epochs', '1', '--backend', 'cpu', '--no-progress');
      const info = JSON.parse((await rank1('info', '--model', out, '--json')).stdout);
      expect(info).toMatchObject({ layers: 2, vocab: 128, torchDtype: 'float32' });
      // The finetuned folder is usable on its own: the base's tokenizer came with it.
      for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
        expect(await fs.readFile(path.join(out, f), 'utf8')).toBe(await fs.readFile(path.join(model, f), 'utf8'));
      }
      expect((await rank1('tokenize', '--model', out, '--text', 'abc')).stdout).toBe((await rank1('tokenize', '--model', model, '--text', 'abc')).stdout);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
