// .ci/debian-source: the URI and keyring of the machine's own Debian bookworm apt source, from which .ci/run
// adds bookworm-backports (so that no mirror host is written in this repository). Runs against apt folders
// made here; the machine's /etc/apt is only read, in the last test.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const script = path.resolve(import.meta.dirname, '../.ci/debian-source');

/** An apt folder holding `files` (path → text); what the script prints for it, or null when it fails. */
async function sourceOf(files: Record<string, string>): Promise<string | null> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-apt-'));
  await fs.mkdir(path.join(dir, 'sources.list.d'));
  for (const [name, text] of Object.entries(files)) await fs.writeFile(path.join(dir, name), text);
  try {
    return (await run('bash', [script, dir])).stdout;
  } catch (error) {
    const failure = error as { code?: number; stdout?: string };
    expect(failure.code).toBe(1);
    expect(failure.stdout).toBe('');
    return null;
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

describe.runIf(process.platform !== 'win32')('.ci/debian-source', () => {
  it('a Debian 12 image: the deb822 stanza whose suites include bookworm (not -security), with its keyring', async () => {
    expect(await sourceOf({
      'sources.list.d/debian.sources': [
        'Types: deb',
        '# a snapshot of the archive',
        'URIs: http://mirror.example.invalid/debian',
        'Suites: bookworm bookworm-updates',
        'Components: main',
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg',
        '',
        'Types: deb',
        'URIs: http://mirror.example.invalid/debian-security',
        'Suites: bookworm-security',
        'Components: main',
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg',
        '',
      ].join('\n'),
      'sources.list.d/other.list.disabled': 'deb https://other.example.invalid/apt cloud-sdk-bookworm main\n',
    })).toBe('http://mirror.example.invalid/debian /usr/share/keyrings/debian-archive-keyring.gpg\n');
  });

  it('skips security-only, deb-src-only and disabled stanzas; field names in any case; an inline key is no file', async () => {
    expect(await sourceOf({
      'sources.list.d/a.sources': [
        'Types: deb', 'URIs: http://security.example.invalid/debian-security', 'Suites: bookworm-security', '',
        'Types: deb-src', 'URIs: http://src.example.invalid/debian', 'Suites: bookworm', '',
        'Enabled: no', 'Types: deb', 'URIs: http://off.example.invalid/debian', 'Suites: bookworm', '',
        'types: deb deb-src', 'uris: http://good.example.invalid/debian http://second.example.invalid/debian',
        'suites: bookworm bookworm-updates', 'signed-by:', ' -----BEGIN PGP PUBLIC KEY BLOCK-----', ' .', ' xyz',
      ].join('\n'), // no newline at the end
    })).toBe('http://good.example.invalid/debian -\n');
  });

  it('one-line entries in sources.list, with or without [options] (signed-by is kept)', async () => {
    expect(await sourceOf({
      'sources.list': '# comment\ndeb-src http://src.example.invalid/debian bookworm main\n'
        + 'deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://one.example.invalid/debian bookworm main contrib\n',
    })).toBe('http://one.example.invalid/debian /usr/share/keyrings/k.gpg\n');
    expect(await sourceOf({ 'sources.list': 'deb  http://plain.example.invalid/debian   bookworm main # trailing\n' }))
      .toBe('http://plain.example.invalid/debian -\n');
    expect(await sourceOf({ 'sources.list.d/extra.list': 'deb http://list-d.example.invalid/debian bookworm main\n' }))
      .toBe('http://list-d.example.invalid/debian -\n');
  });

  it('fails (exit 1, nothing printed) without a Debian bookworm source', async () => {
    expect(await sourceOf({})).toBeNull();
    expect(await sourceOf({
      'sources.list.d/node.sources': 'Types: deb\nURIs: https://node.example.invalid/node_20.x\nSuites: nodistro\nComponents: main\n',
      'sources.list': 'deb http://old.example.invalid/debian bullseye main\n',
    })).toBeNull();
  });

  it.runIf(existsSync('/etc/apt/sources.list.d'))('this machine\'s /etc/apt: a URI and a keyring, or a clean failure', async () => {
    const out = await run('bash', [script, '/etc/apt']).then((r) => r.stdout, (error: { code?: number }) => error.code);
    if (typeof out === 'string') expect(out).toMatch(/^\S+:\/\/\S+ (\/\S+|-)\n$/);
    else expect(out).toBe(1);
  });
});
