// src/io: atomic writes leave no temporary file behind and never a half-written target (a failing writer
// leaves the old one), concurrent writes of one target do not collide, and JSONL reading names the file and
// line of a bad line (or skips it, for partial files cut by a kill).
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileAtomic, writeFolderAtomic, writeJsonAtomic } from '../src/io/atomic.ts';
import { appendJsonl, readJsonl, writeJsonl } from '../src/io/jsonl.ts';

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-io-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const rows = async (file: string, options = {}) => {
  const out: unknown[] = [];
  for await (const { value } of readJsonl(file, options)) out.push(value);
  return out;
};

describe('atomic writes', () => {
  it('writes text, bytes and handle writers; a failing writer leaves the old file and no temporary', async () => {
    const file = path.join(dir, 'a.txt');
    await writeFileAtomic(file, 'one');
    expect(await fs.readFile(file, 'utf8')).toBe('one');
    await writeFileAtomic(file, new Uint8Array([0x74, 0x77, 0x6f]), { sync: false });
    expect(await fs.readFile(file, 'utf8')).toBe('two');
    await expect(writeFileAtomic(file, async (handle) => {
      await handle.writeFile('half');
      throw new Error('disk full');
    })).rejects.toThrow('disk full');
    expect(await fs.readFile(file, 'utf8')).toBe('two');
    await writeJsonAtomic(path.join(dir, 'b.json'), { x: [1] });
    expect(await fs.readFile(path.join(dir, 'b.json'), 'utf8')).toBe('{\n  "x": [\n    1\n  ]\n}\n');
    expect((await fs.readdir(dir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('concurrent writes of one target each use their own temporary file', async () => {
    const file = path.join(dir, 'same.json');
    await Promise.all(Array.from({ length: 20 }, (_, i) => writeFileAtomic(file, JSON.stringify({ i, pad: 'x'.repeat(10_000) }), { sync: false })));
    expect((JSON.parse(await fs.readFile(file, 'utf8')) as { i: number }).i).toBeGreaterThanOrEqual(0);
    expect((await fs.readdir(dir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('replaces a folder whole, or not at all', async () => {
    const target = path.join(dir, 'folder');
    await writeFolderAtomic(target, (d) => fs.writeFile(path.join(d, 'old'), '1'));
    await expect(writeFolderAtomic(target, async (d) => {
      await fs.writeFile(path.join(d, 'new'), '2');
      throw new Error('killed');
    })).rejects.toThrow('killed');
    expect(await fs.readdir(target)).toEqual(['old']);
    await writeFolderAtomic(target, (d) => fs.writeFile(path.join(d, 'new'), '2'));
    expect(await fs.readdir(target)).toEqual(['new']);
    expect((await fs.readdir(dir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});

describe('JSONL', () => {
  it('writes, appends and reads back rows byte for byte', async () => {
    const file = path.join(dir, 'rows.jsonl');
    const many = Array.from({ length: 3000 }, (_, i) => ({ i, text: `row ${i} ${'é'.repeat(500)}` }));
    await writeJsonl(file, many);
    expect(await fs.readFile(file, 'utf8')).toBe(many.map((r) => `${JSON.stringify(r)}\n`).join(''));
    await appendJsonl(file, { i: -1 });
    await appendJsonl(file, [{ i: -2 }, { i: -3 }]);
    await appendJsonl(file, []);
    const back = await rows(file);
    expect(back).toHaveLength(3003);
    expect(back.slice(-3)).toEqual([{ i: -1 }, { i: -2 }, { i: -3 }]);
  });

  it('names the file and line of a bad line, skips it when asked, and reads a missing file as empty when asked', async () => {
    const file = path.join(dir, 'bad.jsonl');
    await fs.writeFile(file, '{"a":1}\n\n{"a":\n{"a":3}\n');
    await expect(rows(file, { expected: 'a test file' })).rejects.toThrow(`${file}:3: not JSON (expected a test file)`);
    expect(await rows(file, { skipBadLines: true })).toEqual([{ a: 1 }, { a: 3 }]);
    const lines: number[] = [];
    for await (const { line } of readJsonl(file, { skipBadLines: true })) lines.push(line);
    expect(lines).toEqual([1, 4]);
    const missing = path.join(dir, 'missing.jsonl');
    expect(await rows(missing, { missingOk: true })).toEqual([]);
    await expect(rows(missing, { label: '--features' })).rejects.toThrow(`--features ${missing}: ENOENT`);
  });
});
