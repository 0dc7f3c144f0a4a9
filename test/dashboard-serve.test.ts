// `rank1 dashboard --serve` serves only regular files inside the site folder (issue 20, must 6): a symbolic
// link to a file or folder outside it, a dotfile or a dot folder are 404 like a missing file; ordinary files
// and the index are 200; and the command takes --host like `rank1 serve`, loopback by default.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildSiteServer } from '../src/cli/dashboard-command.ts';

const root = path.resolve(import.meta.dirname, '..');

describe('rank1 dashboard --serve', () => {
  let work: string;
  let app: FastifyInstance;

  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'rank1-site-'));
    const site = path.join(work, 'site');
    const outside = path.join(work, 'outside');
    fs.mkdirSync(path.join(site, 'data'), { recursive: true });
    fs.mkdirSync(path.join(site, '.git'));
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(site, 'index.html'), '<h1>features</h1>');
    fs.writeFileSync(path.join(site, 'data', 'chunk-0.json'), '[]');
    fs.writeFileSync(path.join(site, '.env'), 'TOKEN=secret');
    fs.writeFileSync(path.join(site, '.git', 'config'), 'secret');
    fs.writeFileSync(path.join(outside, 'passwd'), 'root:x:0:0');
    fs.symlinkSync(path.join(outside, 'passwd'), path.join(site, 'passwd'));
    fs.symlinkSync(outside, path.join(site, 'out'));
    app = await buildSiteServer(site);
  });
  afterAll(async () => {
    await app?.close();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  const get = async (url: string) => {
    const response = await app.inject({ method: 'GET', url });
    return { status: response.statusCode, body: response.body };
  };

  it('serves regular files inside the folder, and its index', async () => {
    expect(await get('/data/chunk-0.json')).toEqual({ status: 200, body: '[]' });
    expect(await get('/index.html')).toMatchObject({ status: 200, body: '<h1>features</h1>' });
    expect(await get('/')).toMatchObject({ status: 200, body: '<h1>features</h1>' });
  });

  it('a symbolic link to a file or a folder outside is a 404', async () => {
    for (const url of ['/passwd', '/out/passwd', '/out/', '/%70asswd']) {
      const { status, body } = await get(url);
      expect(status, url).toBe(404);
      expect(body, url).not.toContain('root:x');
    }
  });

  it('dotfiles and dot folders are a 404', async () => {
    for (const url of ['/.env', '/.git/config', '/data/../.env', '/%2eenv']) {
      const { status, body } = await get(url);
      expect(status, url).toBe(404);
      expect(body, url).not.toContain('secret');
    }
  });

  it('takes --host, 127.0.0.1 by default', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(root, 'bin/rank1.js'), 'dashboard', '--help'], { cwd: root });
    expect(stdout).toMatch(/--host <address>.*\(default: "127\.0\.0\.1"\)/s);
  });
});
