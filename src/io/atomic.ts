// Atomic writes: a file (or a folder) is written under a temporary name beside its target and renamed over
// it, so a reader or a killed run never sees it half-written. This module is a leaf: it imports nothing from
// src/, so every layer (model, train, interp, dashboard) can use it.
import { constants as fsConstants, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';

/** What to write: text, bytes, or a function that fills the open temporary file. */
export type FileContents = string | Uint8Array | ((handle: FileHandle, tmp: string) => Promise<void>);

export interface AtomicWriteOptions {
  /**
   * fsync the file and its folder so the rename survives a power cut (default true). Caches of many small,
   * re-creatable files turn it off: a lost entry is only asked again.
   */
  sync?: boolean;
}

/** Temporary names are unique per process and call, so concurrent writes of one target never share one. */
let temporaryCounter = 0;
const temporaryName = (target: string): string => `${target}.tmp-${process.pid}-${temporaryCounter++}`;

/** Best effort: makes a rename durable on filesystems that support fsync on a directory. */
async function syncDirectory(dir: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await fs.open(dir, fsConstants.O_RDONLY);
    await handle.sync();
  } catch {
    // Not supported everywhere (e.g. Windows); the rename itself is still atomic.
  } finally {
    await handle?.close();
  }
}

/**
 * Writes `target` atomically: `contents` fills `target.tmp-<pid>-<n>`, which is fsynced (unless `sync` is
 * false) and renamed over `target`. On failure the temporary file is removed and `target` is untouched.
 */
export async function writeFileAtomic(target: string, contents: FileContents, options: AtomicWriteOptions = {}): Promise<void> {
  const sync = options.sync ?? true;
  const tmp = temporaryName(target);
  const handle = await fs.open(tmp, 'w');
  try {
    if (typeof contents === 'function') await contents(handle, tmp);
    else await handle.writeFile(contents, typeof contents === 'string' ? 'utf8' : undefined);
    if (sync) await handle.sync();
    await handle.close();
    await fs.rename(tmp, target);
  } catch (err) {
    await handle.close().catch(() => undefined);
    await fs.rm(tmp, { force: true });
    throw err;
  }
  if (sync) await syncDirectory(path.dirname(target));
}

/** `value` as indented JSON with a final newline, written atomically. */
export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Writes the folder `target` atomically: `fill(dir)` fills a fresh `target.tmp-<pid>-<n>` folder, which
 * then replaces `target` whole. On failure the temporary folder is removed and `target` is untouched.
 */
export async function writeFolderAtomic(target: string, fill: (dir: string) => Promise<void>): Promise<void> {
  const tmp = temporaryName(target);
  await fs.rm(tmp, { recursive: true, force: true });
  await fs.mkdir(tmp, { recursive: true });
  try {
    await fill(tmp);
    await fs.rm(target, { recursive: true, force: true });
    await fs.rename(tmp, target);
  } catch (error) {
    await fs.rm(tmp, { recursive: true, force: true });
    throw error;
  }
}
