// Every rank1 command takes --backend, as the README says (issue 20, must 10): `rank1 info --backend cpu` was
// refused ("unknown option"); commands that run no model accept it and ignore it.
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');
const toy = path.join(root, 'models/toy');
const rank1 = (...args: string[]) => promisify(execFile)(process.execPath, [path.join(root, 'bin/rank1.js'), ...args], { cwd: root });

describe('--backend on every command', () => {
  it('rank1 info and rank1 tokenize take --backend cpu', async () => {
    const info = await rank1('info', '--model', toy, '--json', '--backend', 'cpu');
    expect(JSON.parse(info.stdout)).toHaveProperty('layers');
    const tokenized = await rank1('tokenize', '--model', toy, '--text', 'hi', '--backend', 'cpu');
    expect(JSON.parse(tokenized.stdout)).toHaveProperty('ids');
  }, 60_000);

  it('and still refuses a backend that does not exist', async () => {
    await expect(rank1('info', '--model', toy, '--backend', 'tpu')).rejects.toMatchObject({ stderr: expect.stringMatching(/--backend.*tpu.*(auto|cpu|webgpu)/s) });
  }, 60_000);
});
