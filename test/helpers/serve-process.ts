// `rank1 serve` as a child process for tests: started on a free port, resolved with its base URL once it
// prints its address line (rejected if it exits first).
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as path from 'node:path';

const root = path.resolve(import.meta.dirname, '../..');

export interface ServeProcess {
  child: ChildProcessWithoutNullStreams;
  baseURL: string;
  /** Called with every stdout chunk after start (with --log, one JSON line per request). */
  onStdout: (listener: (text: string) => void) => void;
}

export async function startServeProcess(args: readonly string[]): Promise<ServeProcess> {
  const child = spawn(process.execPath, [path.join(root, 'bin/rank1.js'), 'serve', '--port', '0', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const listeners: ((text: string) => void)[] = [];
  const baseURL = await new Promise<string>((resolve, reject) => {
    let out = '';
    let errors = '';
    child.stderr.on('data', (d: Buffer) => (errors += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      const text = d.toString();
      out += text;
      for (const listener of listeners) listener(text);
      const m = /(http:\/\/127\.0\.0\.1:\d+\/v1)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`rank1 serve exited early with ${code}: ${errors}`)));
  });
  return { child, baseURL, onStdout: (listener) => listeners.push(listener) };
}
