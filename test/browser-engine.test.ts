// rank1's engine in a real browser: the browser build (src/browser/bundle.ts, the CLI's own sources with
// Node's built-ins shimmed) loads the shipped toy base and a rank-1 adapter over HTTP in headless Chromium,
// on the CPU backend, and its logits and adapter activations equal the Node engine's for the same ids.
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import Fastify from 'fastify';
import fastifyStatic from '@fastify/static';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleBrowserEngine } from '../src/browser/bundle.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { tensor } from '../src/tensor/ops.ts';
import { tidy } from '../src/tensor/tensor.ts';
import { loadQwen2Checkpoint, savePeftAdapter } from '../src/model/load.ts';
import { randomRankOneAdapters } from '../src/model/random-model.ts';
import { browserTests, launchChromium } from './helpers/browser.ts';

const root = path.resolve(import.meta.dirname, '..');
const toy = path.join(root, 'models/toy');

describe.runIf(browserTests)('the engine in headless Chromium', () => {
  let dir: string;
  let app: ReturnType<typeof Fastify>;
  let base: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-browser-'));
    await fs.writeFile(path.join(dir, 'rank1.js'), await bundleBrowserEngine());
    await fs.writeFile(path.join(dir, 'index.html'), '<!doctype html><meta charset="utf-8"><script src="rank1.js"></script>');
    await fs.mkdir(path.join(dir, 'model'));
    for (const file of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'generation_config.json']) {
      await fs.copyFile(path.join(toy, file), path.join(dir, 'model', file));
    }
    const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
    await savePeftAdapter(path.join(dir, 'adapter'), randomRankOneAdapters(model.dims, 5, getCpuBackend(), 0.05));
    model.dispose();
    app = Fastify();
    await app.register(fastifyStatic, { root: dir });
    base = `${await app.listen({ port: 0, host: '127.0.0.1' })}/`;
  });
  afterAll(async () => {
    await app?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('loads the toy base and an adapter from bytes; logits with and without the adapter equal the Node engine\'s, on the CPU backend and on the page\'s WebGPU', async () => {
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(`${base}index.html`);
      const question = 'What is the last digit of 7 * 8?';
      const fromPage = await page.evaluate(async (text) => {
        const rank1 = (window as unknown as { rank1: typeof import('../src/browser/engine.ts') }).rank1;
        const loaded = await rank1.fetchModel('model/', rank1.cpuBackend());
        const ids = rank1.chatPromptIds(loaded, [{ role: 'user', content: text }]);
        const base = Array.from(await rank1.logitsOf(loaded.model, ids));
        await rank1.fetchAdapter('adapter/', loaded.model);
        const withAdapter = Array.from(await rank1.logitsOf(loaded.model, ids));
        // The same on the page's WebGPU (Chromium's SwiftShader adapter here).
        const gpu = await rank1.webGpuBackend();
        let gpuLogits: number[] | null = null;
        let gpuReason = '';
        if ('backend' in gpu) {
          const onGpu = await rank1.fetchModel('model/', gpu.backend);
          await rank1.fetchAdapter('adapter/', onGpu.model);
          gpuLogits = Array.from(await rank1.logitsOf(onGpu.model, ids));
          gpuReason = gpu.backend.description;
        } else gpuReason = gpu.reason;
        return { ids, base, withAdapter, gpuLogits, gpuReason, vocab: loaded.model.dims.vocab };
      }, question);
      expect(errors).toEqual([]);

      const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
      try {
        const logits = async () => {
          const out = tidy(() => model.forward(tensor(Int32Array.from(fromPage.ids), [1, fromPage.ids.length], { dtype: 'i32' })));
          const values = await out.toFloat32Array();
          out.dispose();
          return values;
        };
        const close = (page: number[], node: Float32Array) => {
          expect(page).toHaveLength(node.length);
          let worst = 0;
          for (let i = 0; i < node.length; i++) worst = Math.max(worst, Math.abs(page[i]! - node[i]!));
          return worst;
        };
        expect(fromPage.ids.length).toBeGreaterThan(10);
        expect(close(fromPage.base, await logits())).toBeLessThan(1e-4);
        const adapterDir = path.join(dir, 'adapter');
        const { loadPeftAdapter } = await import('../src/model/load.ts');
        await loadPeftAdapter(adapterDir, model);
        const adapted = await logits();
        expect(close(fromPage.withAdapter, adapted)).toBeLessThan(1e-4);
        expect(fromPage.gpuLogits, `WebGPU in the page: ${fromPage.gpuReason}`).not.toBeNull();
        expect(close(fromPage.gpuLogits!, adapted)).toBeLessThan(2e-3);
        // The adapter changed the logits (so the comparison above is not base against base).
        expect(close(fromPage.withAdapter, Float32Array.from(fromPage.base))).toBeGreaterThan(1e-3);
      } finally {
        model.dispose();
      }
    } finally {
      await browser.close();
    }
  }, 120_000);
});
