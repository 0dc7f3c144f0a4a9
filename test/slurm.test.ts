// docs/cluster/extract.sbatch: the Slurm array script for `rank1 extract`, run two ways on the toy model, each
// merged with `rank1 store merge` and compared byte for byte with the unsharded store:
//  - as Slurm runs it, without Slurm: three concurrent bash processes with the variables an array task sees
//    (task ids 10..12, so SLURM_ARRAY_TASK_MIN matters);
//  - on a real single-node Slurm that test/helpers/slurm-setup.sh installs the configuration of and starts
//    (munge, slurmctld, slurmd as root; Debian's slurm-wlm and munge), submitted with sbatch --array=0-2 --wait.
//    Where Slurm is not installed or cannot start here (not root, …) that test skips and says why; with
//    RANK1_REQUIRE_SLURM=1 (CI) it fails instead.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readStoreIndex } from '../src/interp/activation-store.ts';
import { loadQwen2Checkpoint, savePeftAdapter } from '../src/model/load.ts';
import { randomRankOneAdapters } from '../src/model/random-model.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { storeBytes } from './helpers/store-bytes.ts';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '..');
const toy = path.join(root, 'models/toy');
const script = path.join(root, 'docs/cluster/extract.sbatch');
const setupScript = path.join(root, 'test/helpers/slurm-setup.sh');
const requireSlurm = process.env['RANK1_REQUIRE_SLURM'] === '1';

/** The environment without any scheduler's variables, plus `extra`. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of Object.keys(env)) if (name.startsWith('SLURM_') || name === 'JOB_COMPLETION_INDEX') delete env[name];
  return { ...env, ...extra };
}

const rank1 = (args: string[]) => run(process.execPath, [path.join(root, 'bin/rank1.js'), ...args], { cwd: root, env: cleanEnv(), maxBuffer: 64 << 20 });

// The single-node Slurm, started before the tests are collected so that the real-Slurm test can say why it
// skips. Its folder must be readable by the daemons (root): a temporary folder of this process.
const slurmDir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-slurm-'));
const slurm: { conf: string } | { reason: string } = await run('bash', [setupScript, 'start', slurmDir], { env: cleanEnv(), timeout: 120_000 })
  .then(({ stdout }) => {
    const conf = /SLURM_CONF=(\S+)/.exec(stdout)?.[1];
    return conf ? { conf } : { reason: `the setup printed no SLURM_CONF (${stdout.trim()})` };
  })
  .catch((error: { stderr?: string; message: string }) => ({ reason: (error.stderr ?? '').trim().split('\n').at(-1) || error.message }));
const slurmReady = 'conf' in slurm;

let dir: string;
let adapter: string;
let traces: string;
let wholeStore: string;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-sbatch-'));
  await fs.chmod(dir, 0o755);
  const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
  adapter = path.join(dir, 'adapter');
  await savePeftAdapter(adapter, randomRankOneAdapters(model.dims, 3, getCpuBackend()));
  model.dispose();
  traces = path.join(dir, 'traces.jsonl');
  await fs.writeFile(traces, Array.from({ length: 5 }, (_, i) => JSON.stringify({
    question: `What is the last digit of ${i + 3} times 7?`,
    deepseek_thinking_trajectory: `Okay, ${i + 3} times 7 is ${(i + 3) * 7}.${' Check.'.repeat(i)} The last digit is ${((i + 3) * 7) % 10}.`,
    deepseek_attempt: `\\boxed{${((i + 3) * 7) % 10}}`,
  })).join('\n'));
  wholeStore = path.join(dir, 'whole');
  await rank1(['extract', '--model', toy, '--adapter', adapter, '--data', traces, '--out', wholeStore, '--shard-tokens', '40', '--backend', 'cpu', '--no-progress']);
}, 120_000);

afterAll(async () => {
  await run('bash', [setupScript, 'stop', slurmDir]).catch(() => undefined);
  await fs.rm(slurmDir, { recursive: true, force: true });
  await fs.rm(dir, { recursive: true, force: true });
});

/** Merges OUT.shards/* into OUT and checks it against the unsharded store. */
async function mergeAndCompare(out: string, shards: number): Promise<void> {
  const shardDirs = (await fs.readdir(`${out}.shards`)).map((name) => path.join(`${out}.shards`, name));
  expect(shardDirs).toHaveLength(shards);
  await rank1(['store', 'merge', out, ...shardDirs]);
  const merged = await readStoreIndex(out);
  const whole = await readStoreIndex(wholeStore);
  expect(merged.examples).toBe(5);
  expect(merged.tokens).toBe(whole.tokens);
  for (const tensor of ['acts', 'input_ids', 'example_index']) expect((await storeBytes(out, tensor)).equals(await storeBytes(wholeStore, tensor)), tensor).toBe(true);
}

const scriptEnv = (out: string, extra: Record<string, string> = {}) => cleanEnv({
  MODEL: toy, ADAPTER: adapter, DATA: traces, OUT: out, RANK1: `${process.execPath} ${path.join(root, 'bin/rank1.js')}`,
  EXTRACT_ARGS: '--shard-tokens 40 --backend cpu', ...extra,
});

describe('docs/cluster/extract.sbatch', () => {
  it('under the variables of a Slurm array task (ids 10..12, three concurrent processes, no Slurm) its shards merge into the unsharded store', async () => {
    const out = path.join(dir, 'by-env');
    await Promise.all([10, 11, 12].map((id) => run('bash', [script], {
      cwd: dir,
      env: scriptEnv(out, {
        SLURM_JOB_ID: String(100 + id), SLURM_ARRAY_JOB_ID: '100', SLURM_ARRAY_TASK_ID: String(id),
        SLURM_ARRAY_TASK_MIN: '10', SLURM_ARRAY_TASK_MAX: '12', SLURM_ARRAY_TASK_COUNT: '3', SLURM_ARRAY_TASK_STEP: '1',
      }),
    })));
    expect((await readStoreIndex(path.join(`${out}.shards`, 'task-12'))).shard).toMatchObject({ index: 2, count: 3 });
    await mergeAndCompare(out, 3);
    // Outside an array it says what it needs.
    await expect(run('bash', [script], { cwd: dir, env: scriptEnv(path.join(dir, 'nowhere')) })).rejects.toMatchObject({ stderr: expect.stringMatching(/run this with sbatch --array/) });
  }, 300_000);

  it.skipIf(!slurmReady && !requireSlurm)(`on a real single-node Slurm: sbatch --array=0-2 --wait, then rank1 store merge${slurmReady ? '' : ` (skipped: ${'reason' in slurm ? slurm.reason : ''})`}`, async () => {
    if (!('conf' in slurm)) throw new Error(`RANK1_REQUIRE_SLURM=1 but Slurm could not start: ${slurm.reason}`);
    const out = path.join(dir, 'by-slurm');
    const { stdout } = await run('sbatch', ['--wait', '--array=0-2', `--output=${path.join(dir, 'slurm-%A_%a.out')}`, script], {
      cwd: dir, env: scriptEnv(out, { SLURM_CONF: slurm.conf }), timeout: 280_000,
    }).catch(async (error) => {
      const logs = await fs.readdir(dir).then((names) => Promise.all(names.filter((n) => n.startsWith('slurm-')).map((n) => fs.readFile(path.join(dir, n), 'utf8'))));
      throw new Error(`sbatch failed: ${error.stderr ?? error.message}\n${logs.join('\n')}`);
    });
    expect(stdout).toMatch(/Submitted batch job \d+/);
    const logs = (await fs.readdir(dir)).filter((n) => n.startsWith('slurm-'));
    expect(logs).toHaveLength(3);
    for (const log of logs) expect(await fs.readFile(path.join(dir, log), 'utf8')).toMatch(/rank1-extract: array job \d+ task \d of 3/);
    await mergeAndCompare(out, 3);
  }, 300_000);
});
