// JSON Lines: one JSON value per line, each ended by "\n". Written whole (atomically, for results), appended
// to (logs and resumable partial files), and read line by line (a features file of a large model holds
// thousands of features with their contexts, so it is never read into one string). A leaf module.
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { writeFileAtomic, type AtomicWriteOptions } from './atomic.ts';

/** `row` as one JSONL line, newline included. */
export const jsonlLine = (row: unknown): string => `${JSON.stringify(row)}\n`;

/** Lines are gathered into chunks of about this many characters before each write. */
const WRITE_CHUNK = 1 << 20;

/** Writes `rows` as a JSONL file atomically (never half-written), in chunks so a large file needs no one string. */
export async function writeJsonl(file: string, rows: Iterable<unknown>, options: AtomicWriteOptions = {}): Promise<void> {
  await writeFileAtomic(file, async (handle) => {
    let chunk = '';
    for (const row of rows) {
      chunk += jsonlLine(row);
      if (chunk.length >= WRITE_CHUNK) {
        await handle.writeFile(chunk, 'utf8');
        chunk = '';
      }
    }
    if (chunk) await handle.writeFile(chunk, 'utf8');
  }, options);
}

/** Appends rows (one or many) to a JSONL file, creating it when missing, in one write. */
export async function appendJsonl(file: string, rows: unknown | readonly unknown[]): Promise<void> {
  const lines = Array.isArray(rows) ? rows.map(jsonlLine).join('') : jsonlLine(rows);
  if (lines) await fs.appendFile(file, lines);
}

export interface ReadJsonlOptions {
  /** Prefixed to an error opening the file: `--features` gives "--features FILE: ENOENT …". */
  label?: string;
  /** Said after "not JSON", e.g. "explanations.jsonl from rank1 interpret". */
  expected?: string;
  /** A missing file reads as no rows (a partial file not written yet). */
  missingOk?: boolean;
  /** Lines that are not JSON are skipped rather than an error (a line cut by a killed run). */
  skipBadLines?: boolean;
}

/** The JSON value of every non-blank line with its 1-based line number; a line that is not JSON is an error naming the file and line. */
export async function* readJsonl(file: string, options: ReadJsonlOptions = {}): AsyncGenerator<{ value: unknown; line: number }> {
  let handle: FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (error) {
    if (options.missingOk && (error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw options.label ? new Error(`${options.label} ${file}: ${(error as Error).message}`) : error;
  }
  try {
    let line = 0;
    for await (const text of handle.readLines({ encoding: 'utf8' })) {
      line++;
      if (text.trim() === '') continue;
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        if (options.skipBadLines) continue;
        throw new Error(`${file}:${line}: not JSON${options.expected ? ` (expected ${options.expected})` : ''}`);
      }
      yield { value, line };
    }
  } finally {
    await handle.close().catch(() => undefined);
  }
}
