// `rank1 dashboard`: builds the static feature site (src/dashboard/build.ts) and, with --serve, serves it on
// --host (127.0.0.1 unless told otherwise) until Ctrl-C (the site also opens straight from the file system).
// Only regular files inside the site folder are served: no dotfiles, nothing reached through a symbolic link
// (a link in the folder could point anywhere on the machine).
import * as fs from 'node:fs';
import * as path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import fastifyStatic from '@fastify/static';
import { buildDashboard, type DashboardOptions } from '../dashboard/build.ts';

export interface DashboardCommandOptions extends DashboardOptions {
  features: string[];
  serve?: boolean;
  port: number;
  /** Address --serve listens on (default 127.0.0.1: this machine only). */
  host?: string;
}

export async function dashboardCommand(options: DashboardCommandOptions): Promise<void> {
  const started = Date.now();
  const built = await buildDashboard(options);
  console.log(`dashboard: ${built.features} features in ${built.chunks} data chunks, ${((Date.now() - started) / 1000).toFixed(1)} s → ${path.join(built.dir, 'index.html')}`);
  if (!options.serve) return;
  const app = await buildSiteServer(built.dir);
  const address = await app.listen({ port: options.port, host: options.host ?? '127.0.0.1' });
  console.log(`serving ${built.dir} at ${address}/ (Ctrl-C to stop)`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await app.close();
}

/** A server of the regular files under `dir` (anything else is a 404). */
export async function buildSiteServer(dir: string): Promise<FastifyInstance> {
  const root = fs.realpathSync(dir);
  const app = Fastify();
  await app.register(fastifyStatic, { root, dotfiles: 'ignore', allowedPath: (pathName) => isPlainSitePath(root, pathName) });
  return app;
}

/**
 * Whether a request path names a regular file or folder under `root` (a real path) with no symbolic link on the
 * way and no dot-named part. @fastify/static asks again with the file a folder resolves to (its index.html).
 */
function isPlainSitePath(root: string, pathName: string): boolean {
  let decoded: string;
  try {
    decoded = decodeURIComponent(pathName);
  } catch {
    return false;
  }
  const parts = decoded.split('/').filter((part) => part !== '');
  if (parts.some((part) => part.startsWith('.') || part.includes('\\') || part.includes('\0'))) return false;
  const file = path.join(root, ...parts);
  try {
    // The real path equals the path only when no part of it is a link.
    if (fs.realpathSync(file) !== file) return false;
    const stat = fs.lstatSync(file);
    return stat.isFile() || stat.isDirectory();
  } catch {
    return false;
  }
}
