// .ci/node: the bin folder of a Node of the given major. Only the paths that need no network run here: the
// machine's own Node when it is that major, and the usage error. (Fetching another major is what .ci/run
// does; README's "Set up and run" shows it by hand.)
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const script = path.resolve(import.meta.dirname, '../.ci/node');
const nodeBin = path.dirname(process.execPath);
/** This Node first on PATH, as .ci/run puts the one it tests. */
const env = { ...process.env, PATH: `${nodeBin}${path.delimiter}${process.env.PATH ?? ''}` };

describe('.ci/node', () => {
  it("prints the machine's own bin folder when its Node is the major asked for", async () => {
    const major = process.versions.node.split('.')[0]!;
    const { stdout } = await run('bash', [script, major], { env });
    expect(stdout.trim()).toBe(nodeBin);
  });

  it('says how to call it when the major is missing', async () => {
    await expect(run('bash', [script], { env })).rejects.toMatchObject({ stderr: expect.stringMatching(/usage: \.ci\/node <major>/) });
  });
});
