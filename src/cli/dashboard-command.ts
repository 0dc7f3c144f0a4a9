// `rank1 dashboard`: builds the static feature site (src/dashboard/build.ts) and, with --serve, serves it on
// 127.0.0.1 until Ctrl-C (the site also opens straight from the file system).
import * as path from 'node:path';
import Fastify from 'fastify';
import fastifyStatic from '@fastify/static';
import { buildDashboard, type DashboardOptions } from '../dashboard/build.ts';

export interface DashboardCommandOptions extends DashboardOptions {
  features: string[];
  serve?: boolean;
  port: number;
}

export async function dashboardCommand(options: DashboardCommandOptions): Promise<void> {
  const started = Date.now();
  const built = await buildDashboard(options);
  console.log(`dashboard: ${built.features} features in ${built.chunks} data chunks, ${((Date.now() - started) / 1000).toFixed(1)} s → ${path.join(built.dir, 'index.html')}`);
  if (!options.serve) return;
  const app = Fastify();
  await app.register(fastifyStatic, { root: built.dir });
  const address = await app.listen({ port: options.port, host: '127.0.0.1' });
  console.log(`serving ${built.dir} at ${address}/ (Ctrl-C to stop)`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await app.close();
}
