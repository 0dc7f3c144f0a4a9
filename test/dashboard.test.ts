// `rank1 dashboard`: the data it writes (summaries with explanations and ablation KL, detail chunks with every
// token's value, SAE decoder rows), its refusals, and the site itself in headless Chromium (Debian's
// `chromium`, driven by playwright-core): no console errors from file://, search filters the list, a feature
// page colours its tokens, an SAE latent lists its adapters, the overview shows Table 2 and Figure 1.
// Screenshots go to test-results/screenshots/.
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHUNK, buildDashboard, chunkFile } from '../src/dashboard/build.ts';
import type { DashboardIndex, FeatureDetail } from '../src/dashboard/types.ts';
import type { AblationResult } from '../src/interp/ablate.ts';
import { PROJECTIONS, adapterHookName } from '../src/model/hooks.ts';
import { Random } from '../src/tensor/random.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { loadQwen2Checkpoint, savePeftAdapter } from '../src/model/load.ts';
import { randomRankOneAdapters } from '../src/model/random-model.ts';
import { loadTokenizer } from '../src/model/tokenizer.ts';
import { loadChatTemplate } from '../src/model/chat-template.ts';
import { PlaygroundSession } from '../src/browser/playground-session.ts';
import { browserTests, launchChromium } from './helpers/browser.ts';

const root = path.resolve(import.meta.dirname, '..');

/** 2 layers × 7 projections × 2 polarities of adapter directions, 3 MLP neurons, 130 SAE latents (3 chunks). */
function syntheticFiles(rng: Random) {
  const example = (marker: string, value: number, e: number) => {
    const tokens = [' the', ' sum', ' is', ` ${marker}`, '.', '\n', 'Wait'];
    const values = tokens.map((_, i) => (i === 3 ? value : (rng.uniform() - 0.5) * Math.abs(value)));
    return { example: e, position: 3, value, context_ids: tokens.map((_, i) => i + 1), context_tokens: tokens, context_values: values, center: 3 };
  };
  const feature = (name: string, hook: string, polarity: 'pos' | 'neg', marker: string, extra: Record<string, unknown> = {}) => {
    const sign = polarity === 'pos' ? 1 : -1;
    return {
      feature: name, hook, polarity, active_count: 1 + rng.int(1000), mean: sign * 0.5, max: sign * 3,
      histogram: { edges: [0, 1, 2, 3], counts: [5, 3, 1] },
      examples: Array.from({ length: 5 }, (_, i) => example(marker, sign * (3 - i * 0.3), i)), ...extra,
    };
  };
  const adapters = [];
  for (let layer = 0; layer < 2; layer++) {
    for (const projection of PROJECTIONS) {
      for (const polarity of ['pos', 'neg'] as const) adapters.push(feature(`L${layer}_${projection}_${polarity}`, adapterHookName(layer, projection), polarity, `${projection.toUpperCase()}${layer}`));
    }
  }
  const neurons = [0, 1, 2].map((n) => feature(`L1_up_neuron${n}_pos`, `model.layers.1.mlp.up_proj.output[${n}]`, 'pos', `N${n}`));
  const latents = Array.from({ length: 130 }, (_, i) => feature(`sae_${i}`, `sae_${i}`, 'pos', `S${i}`, {
    latent: i, decoder: [{ hook: adapterHookName(1, 'v_proj'), weight: 0.8 }, { hook: adapterHookName(0, 'q_proj'), weight: -0.5 }],
  }));
  const explanations = [
    { feature: 'L0_q_proj_pos', explanation: 'the word after sum', class: 0, category: 'Arithmetic' },
    { feature: 'sae_7', explanation: 'self-check Wait tokens', class: 2, category: 'Verification' },
  ];
  const groups = [];
  for (let layer = 0; layer < 2; layer++) for (const projection of PROJECTIONS) groups.push({ name: adapterHookName(layer, projection), kind: 'adapter', adapters: [adapterHookName(layer, projection)], kl: layer === 0 && projection === 'v_proj' ? 0.25 : 0.01 * (layer + 1), ce: 2.1, kl_by_example: [] });
  groups.push({ name: 'layer 0', kind: 'layer', adapters: [], kl: 0.5, ce: 2.4, kl_by_example: [] }, { name: 'layer 1', kind: 'layer', adapters: [], kl: 0.1, ce: 2.2, kl_by_example: [] });
  groups.push({ name: 'all MLP adapters', kind: 'mlp', adapters: Array.from({ length: 6 }, () => 'x'), kl: 0.3, ce: 2.3, kl_by_example: [] });
  groups.push({ name: 'all attention adapters', kind: 'attention', adapters: Array.from({ length: 8 }, () => 'x'), kl: 0.9, ce: 2.6, kl_by_example: [] });
  groups.push({ name: 'all adapters', kind: 'all', adapters: Array.from({ length: 14 }, () => 'x'), kl: 1.5, ce: 3.0, kl_by_example: [] });
  const ablation = { examples: [1, 2, 3], tokens: 300, full_ce: 2.0, groups } as unknown as AblationResult;
  return { adapters, neurons, latents, explanations, ablation };
}

/** Runs a data script the way the page does, returning what it defined. */
function runDataScript(code: string): { index?: DashboardIndex; chunk?: [number, FeatureDetail[]] } {
  const result: { index?: DashboardIndex; chunk?: [number, FeatureDetail[]] } = {};
  const window = {
    set RANK1_DASHBOARD_INDEX(value: DashboardIndex) { result.index = value; },
    rank1DashboardChunk: (chunk: number, features: FeatureDetail[]) => { result.chunk = [chunk, features]; },
  };
  vm.runInNewContext(code, { window });
  return result;
}

describe('rank1 dashboard', () => {
  let dir: string;
  let site: string;
  let files: { features: string[]; explanations: string; ablation: string };
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-dashboard-'));
    const data = syntheticFiles(new Random(3));
    const write = async (name: string, rows: unknown[]) => {
      const file = path.join(dir, name);
      await fs.writeFile(file, rows.map((r) => JSON.stringify(r)).join('\n'));
      return file;
    };
    files = {
      features: [await write('topk.jsonl', [...data.adapters, ...data.neurons]), await write('sae.jsonl', data.latents)],
      explanations: await write('explanations.jsonl', data.explanations),
      ablation: path.join(dir, 'ablation.json'),
    };
    await fs.writeFile(files.ablation, JSON.stringify(data.ablation));
    site = path.join(dir, 'site');
    await buildDashboard({ features: files.features, explanations: files.explanations, ablation: files.ablation, out: site, title: 'test features' });
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('writes summaries (kinds, layers, explanations, ablation KL) and detail chunks loaded on demand', async () => {
    const { index } = runDataScript(await fs.readFile(path.join(site, 'data/index.js'), 'utf8'));
    expect(index!.features).toHaveLength(28 + 3 + 130);
    const total = index!.features.length;
    expect(index!.chunks).toBe(Math.ceil(total / CHUNK));
    const byName = new Map(index!.features.map((f) => [f.name, f]));
    expect(byName.get('L0_q_proj_pos')).toMatchObject({ kind: 'adapter', layer: 0, projection: 'q_proj', polarity: 'pos', explanation: 'the word after sum', class: 0, category: 'Arithmetic', kl: 0.01 });
    expect(byName.get('L0_v_proj_neg')!.kl).toBe(0.25); // both polarities carry their adapter's KL
    expect(byName.get('L1_up_neuron2_pos')).toMatchObject({ kind: 'mlp', layer: 1, projection: 'up_proj', kl: null });
    expect(byName.get('sae_7')).toMatchObject({ kind: 'sae', layer: null, class: 2, category: 'Verification' });
    expect(index!.ablation!.table.map((r) => [r.label, r.adapters, r.kl])).toEqual([['MLP (gate, up, down)', 6, 0.3], ['attention (q, k, v, o)', 8, 0.9], ['all', 14, 1.5]]);
    expect(index!.ablation!.heatmapSvg).toMatch(/^<svg/);
    // Every feature's details sit in the chunk its summary names, with every token's value.
    for (let c = 0; c < index!.chunks; c++) {
      const { chunk } = runDataScript(await fs.readFile(path.join(site, 'data', chunkFile(c)), 'utf8'));
      expect(chunk![0]).toBe(c);
      for (const detail of chunk![1]) {
        expect(byName.get(detail.name)!.chunk).toBe(c);
        expect(detail.examples[0]!.values).toHaveLength(detail.examples[0]!.tokens.length);
        expect(detail.examples[0]!.values![detail.examples[0]!.center]).toBe(detail.examples[0]!.value);
      }
    }
    const { chunk } = runDataScript(await fs.readFile(path.join(site, 'data', chunkFile(byName.get('sae_7')!.chunk)), 'utf8'));
    expect(chunk![1].find((f) => f.name === 'sae_7')!.decoder).toEqual([{ hook: 'model.layers.1.self_attn.v_proj', weight: 0.8 }, { hook: 'model.layers.0.self_attn.q_proj', weight: -0.5 }]);
  });

  it('refuses a folder of other files, and names a bad explanations or ablation file', async () => {
    const foreign = path.join(dir, 'foreign');
    await fs.mkdir(foreign);
    await fs.writeFile(path.join(foreign, 'notes.txt'), 'mine');
    await expect(buildDashboard({ features: files.features, out: foreign })).rejects.toThrow(/holds other files \(notes.txt\)/);
    expect(await fs.readFile(path.join(foreign, 'notes.txt'), 'utf8')).toBe('mine');
    const bad = path.join(dir, 'bad.jsonl');
    await fs.writeFile(bad, '{"feature": "a"}\nnot json\n');
    await expect(buildDashboard({ features: files.features, explanations: bad, out: path.join(dir, 'x') })).rejects.toThrow(/bad.jsonl:2: not JSON/);
    await expect(buildDashboard({ features: files.features, ablation: bad, out: path.join(dir, 'y') })).rejects.toThrow(/--ablation .*bad.jsonl: not JSON/);
    await expect(buildDashboard({ features: [path.join(dir, 'missing.jsonl')], out: path.join(dir, 'z') })).rejects.toThrow(/missing.jsonl/);
    // A rebuild over its own earlier output is allowed.
    await buildDashboard({ features: files.features, out: site, explanations: files.explanations, ablation: files.ablation });
  });

  describe.runIf(browserTests)('in headless Chromium', () => {
    it('loads from file:// with no console errors; search filters; a feature page colours tokens; SAE decoder; overview', async () => {
      const shots = path.join(root, 'test-results/screenshots');
      await fs.mkdir(shots, { recursive: true });
      const browser = await launchChromium();
      try {
        const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
        const errors: string[] = [];
        page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
        page.on('pageerror', (e) => errors.push(String(e)));
        const url = `file://${path.join(site, 'index.html')}`;
        await page.goto(url);
        await page.waitForSelector('tr.feature-row');
        expect(await page.textContent('[data-testid=count]')).toBe('161 of 161 features');
        expect(await page.locator('tr.feature-row').count()).toBe(100); // one page
        await page.screenshot({ path: path.join(shots, 'dashboard-list.png') });
        await page.fill('input[type=search]', 'after sum');
        expect(await page.textContent('[data-testid=count]')).toBe('1 of 161 features');
        await page.fill('input[type=search]', '');
        await page.selectOption('select[name=kind]', 'sae');
        expect(await page.textContent('[data-testid=count]')).toBe('130 of 161 features');
        await page.selectOption('select[name=kind]', 'adapter');
        await page.selectOption('select[name=projection]', 'v_proj');
        await page.selectOption('select[name=sort]', 'kl');
        expect(await page.locator('tr.feature-row').first().getAttribute('data-feature')).toMatch(/^L0_v_proj_/);
        await page.locator('tr.feature-row').first().click();
        await page.waitForSelector('[data-testid=example]');
        const center = page.locator('[data-testid=example]').first().locator('.tok.center');
        expect(await center.getAttribute('style')).toMatch(/background: rgba\(var\(--(pos|neg)\), 1(\.000)?\)/);
        expect(await center.getAttribute('title')).toMatch(/: -?3\.0000$/);
        await page.screenshot({ path: path.join(shots, 'dashboard-feature.png') });
        await page.goto(`${url}#/feature/sae_7`);
        await page.waitForSelector('[data-testid=decoder]');
        expect(await page.textContent('[data-testid=explanation]')).toBe('self-check Wait tokens');
        expect(await page.textContent('[data-testid=decoder]')).toContain('model.layers.1.self_attn.v_proj');
        await page.goto(`${url}#/overview`);
        await page.waitForSelector('[data-testid=table2]');
        expect(await page.textContent('[data-testid=table2]')).toContain('attention (q, k, v, o)');
        expect(await page.locator('.figure svg').count()).toBe(2);
        await page.screenshot({ path: path.join(shots, 'dashboard-overview.png'), fullPage: true });
        expect(errors).toEqual([]);
      } finally {
        await browser.close();
      }
    }, 60_000);

    it('the playground runs the engine in the page (CPU worker and WebGPU), streams tokens with the activation strip, and ablates', async () => {
      const shots = path.join(root, 'test-results/screenshots');
      const adapterDir = path.join(dir, 'adapter');
      const toy = path.join(root, 'models/toy');
      const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
      model.adapters = randomRankOneAdapters(model.dims, 9, getCpuBackend(), 0.05);
      await savePeftAdapter(adapterDir, model.adapters);
      const question = 'Start with 4, then (1) *9, (2) +5. What is the last digit of the result?';
      const session = new PlaygroundSession(model, (await loadTokenizer(toy))!, await loadChatTemplate(toy));
      const ablatedHook = adapterHookName(0, 'v_proj'); // strip row 5: paper order gate, up, down, q, k, v
      const run = async (ablate: string[]) => {
        let text = '';
        const acts: Float32Array[] = [];
        for await (const token of session.generate({ question, maxTokens: 16, ablate })) {
          text += token.text;
          acts.push(token.acts);
        }
        return { text, acts };
      };
      const { text: expected, acts: expectedActs } = await run([]);
      const expectedCount = expectedActs.length;
      const { text: expectedAblated, acts: ablatedActs } = await run([ablatedHook]);
      model.dispose();
      // What the page must show after zero-ablating that adapter: Node's own ablated generation, the cell at 0.
      expect(session.hooks[5]).toBe(ablatedHook);
      expect(Math.abs(expectedActs[3]![5]!)).toBeGreaterThan(1e-4);
      expect(ablatedActs.every((acts) => acts[5] === 0)).toBe(true);
      const withPlayground = path.join(dir, 'site-playground');
      await buildDashboard({ features: files.features, out: withPlayground, model: toy, adapter: adapterDir });
      const browser = await launchChromium();
      try {
        for (const backend of ['cpu', 'webgpu']) {
          const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
          const errors: string[] = [];
          page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
          page.on('pageerror', (e) => errors.push(String(e)));
          await page.goto(`file://${path.join(withPlayground, 'playground.html')}?backend=${backend}`);
          const status = page.locator('[data-testid=status]');
          await page.waitForFunction(() => /^(ready|error)/.test(document.querySelector('[data-testid=status]')?.textContent ?? ''), null, { timeout: 60_000 });
          expect(await status.textContent()).toMatch(new RegExp(`^ready · ${backend === 'cpu' ? 'cpu \\(wasm simd' : 'webgpu'}.* · 28 adapters$`));
          await page.fill('input[name=question]', question);
          await page.fill('input[name=max-tokens]', '16');
          await page.click('[data-testid=generate]');
          await page.waitForFunction(() => /^(done|error)/.test(document.querySelector('[data-testid=status]')?.textContent ?? ''), null, { timeout: 120_000 });
          expect(await status.textContent()).toMatch(new RegExp(`^done: ${expectedCount} tokens`));
          expect(await page.textContent('[data-testid=output]')).toBe(expected);
          const strip = (await page.locator('[data-testid=strip]').boundingBox())!;
          expect(Math.round(strip.width)).toBe(expectedCount * 12);
          await page.mouse.click(strip.x + 12 * 3 + 5, strip.y + 8 * 5 + 3); // token 3, adapter 5 (layer 0 v_proj)
          expect(await page.textContent('[data-testid=selected]')).toMatch(/^model\.layers\.0\.self_attn\.v_proj at token 3/);
          // That adapter's top examples, from the site's own feature data, right there.
          await page.waitForSelector('[data-testid=top-examples] [data-testid=example]');
          expect(await page.locator('[data-testid=top-examples] .tok.center').first().textContent()).toMatch(/^ V_PROJ0$/);
          const unablated = Number(/A·x = (-?\d+\.\d+)/.exec((await page.textContent('[data-testid=selected]'))!)![1]);
          expect(Math.abs(unablated)).toBeGreaterThan(1e-4);
          await page.click('[data-testid=ablate]');
          expect(await page.textContent('[data-testid=interventions]')).toContain('model.layers.0.self_attn.v_proj zeroed');
          await page.click('[data-testid=generate]');
          await page.waitForFunction(() => /^(done|error)/.test(document.querySelector('[data-testid=status]')?.textContent ?? ''), null, { timeout: 120_000 });
          // The ablated run: Node's ablated tokens, and the zeroed adapter's cell reads exactly 0.
          expect(await status.textContent()).toMatch(new RegExp(`^done: ${ablatedActs.length} tokens`));
          expect(await page.textContent('[data-testid=output]')).toBe(expectedAblated);
          const ablatedStrip = (await page.locator('[data-testid=strip]').boundingBox())!;
          await page.mouse.click(ablatedStrip.x + 12 * 3 + 5, ablatedStrip.y + 8 * 5 + 3);
          expect(await page.textContent('[data-testid=selected]')).toMatch(/^model\.layers\.0\.self_attn\.v_proj at token 3 .*A·x = 0\.0000 /);
          await page.screenshot({ path: path.join(shots, `playground-${backend}.png`) });
          expect(errors).toEqual([]);
          await page.close();
        }
      } finally {
        await browser.close();
      }
    }, 240_000);
  });
});
