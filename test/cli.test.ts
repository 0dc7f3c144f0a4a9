// The rank1 command as a user runs it: real processes on checkpoint folders written by the fixture script.
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

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
  });

  it('reports bad input clearly, naming the value at fault', async () => {
    const model = path.join(fixtures, 'tiny-f32');
    expect(await failure('logits', '--model', model, '--ids', '1,2,500', '--backend', 'cpu')).toMatch(/token id 500 at position 2 is outside the vocabulary \[0, 64\)/);
    expect(await failure('logits', '--model', model, '--ids', '1,x', '--backend', 'cpu')).toMatch(/--ids must be comma-separated non-negative integers/);
    expect(await failure('logits', '--model', model, '--adapter', path.join(fixtures, 'adapter-tiny-f32'), '--ids', '1', '--ablate', 'model.layers.9.mlp.up_proj', '--backend', 'cpu'))
      .toMatch(/--ablate: "model.layers.9.mlp.up_proj" is not an adapter of this model/);
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
