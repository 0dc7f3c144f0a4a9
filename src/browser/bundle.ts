// The browser build of rank1's engine: src/browser/engine.ts bundled by esbuild into one classic script that
// defines `window.rank1` (works from file:// and any static server). Node's built-ins resolve to
// ./node-shims.ts, so the engine's sources are shared with the CLI, not forked.
import * as path from 'node:path';
import * as esbuild from 'esbuild';

const SHIMS = path.join(import.meta.dirname, 'node-shims.ts');

const nodeBuiltinsToShims: esbuild.Plugin = {
  name: 'rank1-node-shims',
  setup(build) {
    // Node built-ins, and Dawn's Node binding (a page has navigator.gpu itself).
    build.onResolve({ filter: /^(node:.*|webgpu)$/ }, () => ({ path: SHIMS }));
  },
};

/** The bundle's source text; `entry` defaults to the engine (global `rank1`). */
export async function bundleBrowserEngine(options: { entry?: string; globalName?: string; minify?: boolean } = {}): Promise<string> {
  const result = await esbuild.build({
    entryPoints: [options.entry ?? path.join(import.meta.dirname, 'engine.ts')],
    bundle: true, format: 'iife', globalName: options.globalName ?? 'rank1', platform: 'browser', target: 'es2022',
    minify: options.minify ?? true, write: false, logLevel: 'silent', legalComments: 'none', plugins: [nodeBuiltinsToShims],
    jsx: 'automatic', jsxImportSource: 'preact',
  });
  return result.outputFiles[0]!.text;
}
