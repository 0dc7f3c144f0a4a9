// What the browser bundle gets for Node's built-in modules (esbuild maps every `node:*` import here; see
// src/browser/bundle.ts). The engine's browser path never reaches the file system or worker_threads: those
// sit behind the Node-only loaders (checkpoint folders, tokenizer files) and the matmul worker pool, which a
// single-threaded browser CPU backend does not start (availableParallelism() is 1). Reaching one anyway is a
// clear error, not a silent no-op.
const unavailable = (what: string) => (): never => {
  throw new Error(`${what} is not available in the browser (rank1's browser build loads models from bytes: src/browser/engine.ts)`);
};

// node:os
export const availableParallelism = (): number => 1;
export const endianness = (): 'LE' | 'BE' => (new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 'LE' : 'BE');
export const tmpdir = (): string => '/tmp';
export const platform = (): string => 'browser';
export const cpus = (): unknown[] => [{}];

// node:fs, node:fs/promises
export const readFile = unavailable('fs.readFile');
export const writeFile = unavailable('fs.writeFile');
export const appendFile = unavailable('fs.appendFile');
export const stat = unavailable('fs.stat');
export const open = unavailable('fs.open');
export const rename = unavailable('fs.rename');
export const mkdir = unavailable('fs.mkdir');
export const rm = unavailable('fs.rm');
export const access = unavailable('fs.access');
export const readdir = unavailable('fs.readdir');
export const existsSync = (): boolean => false;
export const readFileSync = unavailable('fs.readFileSync');
export const constants = { O_RDONLY: 0, O_WRONLY: 1, O_CREAT: 64, O_EXCL: 128 };
export const promises = { readFile, writeFile, appendFile, stat, open, rename, mkdir, rm, access, readdir };

// node:path (only joins of names that are never opened here)
export const sep = '/';
export const join = (...parts: string[]): string => parts.filter(Boolean).join('/').replace(/\/+/g, '/');
export const resolve = join;
export const basename = (p: string): string => p.split('/').filter(Boolean).at(-1) ?? '';
export const dirname = (p: string): string => p.split('/').slice(0, -1).join('/') || '.';
export const extname = (p: string): string => /\.[^./]*$/.exec(p)?.[0] ?? '';
export const relative = (_from: string, to: string): string => to;

// node:worker_threads
export class Worker {
  constructor() {
    unavailable('worker_threads.Worker')();
  }
}

// node:crypto
export const createHash = unavailable('crypto.createHash');
export const randomBytes = unavailable('crypto.randomBytes');

export default { availableParallelism, endianness, tmpdir, platform, cpus, readFile, writeFile, appendFile, stat, open, rename, mkdir, rm, access, readdir, existsSync, readFileSync, constants, promises, sep, join, resolve, basename, dirname, extname, relative, Worker, createHash, randomBytes };

// webgpu (Dawn's Node binding): a page uses navigator.gpu instead.
export const create = unavailable('the webgpu package (Dawn for Node)');
export const globals = {};
