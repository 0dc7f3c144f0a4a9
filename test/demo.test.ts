// `rank1 demo --quick` end to end, as a user runs it (the CLI in a child process): every file of the paper's
// pipeline is there and well formed, Table 1 is computed from the evaluation files, report.html carries the
// numbers and embeds the figures with its text escaped; a second run with the same seed, a (fake) autointerp
// endpoint and --one-process gives the same numbers (the full finetune's weights bit for bit, though the first
// run trained it in a second process) and labels every feature. Bad inputs are refused, naming the flag.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoEndpoint } from '../src/cli/demo.ts';
import { DEMO_STEPS, prepareDemoFolder } from '../src/demo/pipeline.ts';
import type { DemoSummary, Table1 } from '../src/demo/folder.ts';
import { escapeDeep, escapeHtml, writeReport } from '../src/demo/report.ts';
import { QUICK_SIZES } from '../src/demo/settings.ts';
import type { FeatureTopExamples } from '../src/interp/topk.ts';
import { PlaygroundSession } from '../src/browser/playground-session.ts';
import { loadChatTemplate } from '../src/model/chat-template.ts';
import { loadPeftAdapter, loadQwen2Checkpoint } from '../src/model/load.ts';
import { loadTokenizer } from '../src/model/tokenizer.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { browserTests, launchChromium } from './helpers/browser.ts';

const root = path.resolve(import.meta.dirname, '..');

function rank1(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(root, 'bin/rank1.js'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** An OpenAI-compatible endpoint that answers the labelling steps (explain, categories, assign) in shape. */
function fakeExplainer(): { server: http.Server; requests: () => number } {
  let requests = 0;
  const categories = ['Arithmetic steps', 'Checking', 'Answer section', 'Chat markup', 'Other'];
  const server = http.createServer((request, response) => {
    let raw = '';
    request.on('data', (d: Buffer) => (raw += d.toString()));
    request.on('end', () => {
      requests++;
      const body = JSON.parse(raw) as { messages: { content: string }[] };
      const user = body.messages.at(-1)!.content;
      const content = user.includes('Propose between')
        ? JSON.stringify({ categories: categories.map((name) => ({ name, description: `features about ${name.toLowerCase()}` })) })
        : user.includes('Which one category')
          ? JSON.stringify({ category: categories[user.length % categories.length] })
          : JSON.stringify({ explanation: `fires for <b>${/the unit "([^"]+)"/.exec(user)?.[1] ?? '?'}</b> "here"`, class: user.length % 3 });
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ choices: [{ message: { role: 'assistant', content } }], usage: { prompt_tokens: 10, completion_tokens: 5 } }));
    });
  });
  return { server, requests: () => requests };
}

/** Every tag report.html.jinja writes. */
const TEMPLATE_TAGS = ['!doctype', 'html', 'head', 'meta', 'title', 'style', 'body', 'h1', 'h2', 'h3', 'p', 'br', 'strong', 'code', 'table', 'thead', 'tbody',
  'tr', 'th', 'td', 'a', 'ul', 'li', 'div', 'figure', 'img', 'figcaption', 'span', 'mark', 'pre'];

const readJson = async <T>(file: string): Promise<T> => JSON.parse(await fs.readFile(file, 'utf8')) as T;
const readJsonl = async <T>(file: string): Promise<T[]> => (await fs.readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as T);
const exists = (file: string) => fs.stat(file).then(() => true, () => false);

describe('rank1 demo --quick', () => {
  let dir: string;
  let plain: { code: number | null; stdout: string; stderr: string };
  let labelled: { code: number | null; stdout: string; stderr: string };
  let explainer: ReturnType<typeof fakeExplainer>;
  const a = () => path.join(dir, 'a');
  const b = () => path.join(dir, 'b');

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-demo-'));
    explainer = fakeExplainer();
    await new Promise<void>((resolve) => explainer.server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(explainer.server.address() as { port: number }).port}/v1`;
    plain = await rank1(['demo', '--quick', '--out', a(), '--seed', '7', '--backend', 'cpu']);
    labelled = await rank1(['demo', '--quick', '--out', b(), '--seed', '7', '--backend', 'cpu', '--endpoint', url, '--explainer-model', 'fake', '--one-process']);
  }, 240_000);

  afterAll(async () => {
    explainer.server.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('runs every step, one line each with its time, and prints Table 1 and the measured total', () => {
    expect(plain.code, plain.stderr).toBe(0);
    const stepLines = plain.stderr.split('\n').filter((l) => /^\[\d+\/\d+\] /.test(l));
    expect(stepLines.map((l) => /^\[\d+\/\d+\] ([^:]+):/.exec(l)![1])).toEqual([...DEMO_STEPS]);
    const time = String.raw`(\d+\.\d s|\d+ min \d\d s)`;
    const alongside = new RegExp(String.raw`\(${time} in the second process, alongside; waited ${time}\)$`);
    for (const line of stepLines) expect(line).toMatch(new RegExp(String.raw`\(${time}\)$|${alongside.source}`));
    // With a second core the full finetune and its evaluation ran in the second process, and only they.
    const ranAlongside = stepLines.filter((l) => alongside.test(l)).map((l) => /^\[\d+\/\d+\] ([^:]+):/.exec(l)![1]);
    expect(ranAlongside).toEqual(os.availableParallelism() >= 2 ? ['train full', 'eval full'] : []);
    expect(plain.stderr).toContain('rank1 serve --model models/toy');
    expect(plain.stderr).toContain('rank1 interpret --features');
    expect(plain.stdout).toMatch(/Table 1 and Table 2 \(toy world, first 16 held-out problems/);
    expect(plain.stdout).toMatch(/^MLP adapters removed: % of gain kept\s+(-?\d+\.\d|n\/a)$/m);
    expect(plain.stdout).toMatch(/^Base\s+\d+\.\d$/m);
    expect(plain.stdout).toMatch(/^% recovery\s+(-?\d+\.\d|n\/a)$/m);
    expect(plain.stdout).toMatch(/demo finished in .*\((\d+\.\d) s measured, quick run, cpu backend\)/);
  });

  it('writes the whole pipeline\'s files: world, adapter, full model, evaluations, ablation, store, top-k, SAE', async () => {
    for (const file of ['world/reasoning.jsonl', 'world/heldout.jsonl', 'lora/adapter_config.json', 'lora/adapter_model.safetensors', 'full/model.safetensors',
      'full/config.json', 'eval/base.jsonl', 'eval/lora.jsonl', 'eval/full.jsonl', 'eval/lora-mlp-ablated.jsonl', 'eval/lora-attention-ablated.jsonl',
      'table1.json', 'ablation/ablation.json', 'ablation/table2.md',
      'store/index.json', 'store/shard-00000.safetensors', 'topk/features.jsonl', 'sae/sae.safetensors', 'sae/config.json', 'sae/metrics.json',
      'sae-features/features.jsonl', 'demo.json', 'demo.log', 'report.html']) {
      expect(await exists(path.join(a(), file)), file).toBe(true);
    }
    expect(await exists(path.join(a(), 'interpret/explanations.jsonl'))).toBe(false);
    for (const svg of ['ablation/adapter-heatmap.svg', 'ablation/kl-by-layer.svg', 'sae/loss-curve.svg', 'lora/loss-curve.svg', 'full/loss-curve.svg']) {
      expect(await fs.readFile(path.join(a(), svg), 'utf8'), svg).toMatch(/^<svg[\s\S]*<\/svg>\s*$/);
    }

    const index = await readJson<{ complete: boolean; examples: number; tokens: number; hooks: string[]; mlp_neurons: string[] }>(path.join(a(), 'store/index.json'));
    expect(index.complete).toBe(true);
    expect(index.examples).toBe(QUICK_SIZES.extractTraces);
    expect(index.hooks).toHaveLength(28); // 7 adapters × 4 layers of the toy base
    expect(index.mlp_neurons).toHaveLength(4 * QUICK_SIZES.mlpNeurons);
    expect(index.tokens).toBeGreaterThan(1000);

    const features = await readJsonl<{ feature: string; active_count: number; max: number; examples: { value: number }[] }>(path.join(a(), 'topk/features.jsonl'));
    expect(features).toHaveLength(2 * (28 + 4 * QUICK_SIZES.mlpNeurons));
    expect(features.filter((f) => f.active_count > 0).length).toBeGreaterThan(28);
    for (const f of features) for (const e of f.examples) expect(Number.isFinite(e.value), f.feature).toBe(true);

    const ablation = await readJson<{ examples: number[]; full_ce: number; groups: { kind: string; kl: number; ce: number }[] }>(path.join(a(), 'ablation/ablation.json'));
    expect(ablation.examples).toHaveLength(QUICK_SIZES.ablationExamples);
    expect(ablation.groups.filter((g) => g.kind === 'adapter')).toHaveLength(28);
    for (const g of ablation.groups) {
      expect(Number.isFinite(g.kl) && g.kl >= 0).toBe(true);
      expect(Number.isFinite(g.ce)).toBe(true);
    }
    expect(ablation.groups.find((g) => g.kind === 'all')!.kl).toBeGreaterThan(0);

    const sae = await readJson<Record<string, number>>(path.join(a(), 'sae/metrics.json'));
    for (const key of ['fvu', 'l0', 'live', 'dead', 'steps']) expect(Number.isFinite(sae[key]), key).toBe(true);
    expect(sae['steps']).toBeGreaterThan(0);
    expect(sae['live']! + sae['dead']!).toBe(28 * 8);
    const latents = await readJsonl<{ feature: string; decoder: { hook: string; weight: number }[] }>(path.join(a(), 'sae-features/features.jsonl'));
    expect(latents.length).toBeGreaterThan(0);
    expect(latents[0]!.feature).toMatch(/^sae_\d+$/);
    expect(latents[0]!.decoder.length).toBeGreaterThan(0);

    const summary = await readJson<DemoSummary>(path.join(a(), 'demo.json'));
    expect(summary.status).toBe('complete');
    expect(summary.seed).toBe(7);
    expect(summary.timings.map((t) => t.step)).toEqual([...DEMO_STEPS]);
    expect(summary.totalSeconds).toBeGreaterThan(summary.timings.slice(0, -1).reduce((n, t) => n + t.seconds, 0));
  });

  it('Table 1 is well formed and computed from the evaluation files: (lora − base) / (full − base)', async () => {
    const table = await readJson<Table1>(path.join(a(), 'table1.json'));
    expect(table.problems).toBe(QUICK_SIZES.heldout);
    for (const role of ['base', 'lora', 'full'] as const) {
      const rows = await readJsonl<{ correct: boolean; index: number }>(path.join(a(), table[role].file));
      expect(rows.map((r) => r.index)).toEqual(Array.from({ length: QUICK_SIZES.heldout }, (_, i) => i));
      expect(table[role].n).toBe(QUICK_SIZES.heldout);
      expect(table[role].correct).toBe(rows.filter((r) => r.correct).length);
      expect(table[role].accuracy).toBeGreaterThanOrEqual(0);
      expect(table[role].accuracy).toBeLessThanOrEqual(1);
      expect(table[role].accuracy).toBeCloseTo(table[role].correct / table[role].n, 12);
    }
    const { base, lora, full } = table;
    if (full.correct === base.correct) expect(table.recovery_percent).toBeNull();
    else expect(table.recovery_percent!).toBeCloseTo((100 * (lora.accuracy - base.accuracy)) / (full.accuracy - base.accuracy), 9);
    expect(table.compare.recovery.toy ?? null).toEqual(table.recovery_percent);
  });

  it('Table 2 is computed from the ablated evaluations, on Table 1\'s problems: (x − base) / (lora − base)', async () => {
    const table = await readJson<Table1>(path.join(a(), 'table1.json'));
    const { base, lora } = table;
    for (const [ablation, role] of [['mlp', 'mlp_ablated'], ['attention', 'attn_ablated']] as const) {
      const row = table.table2[ablation];
      expect(row.file).toBe(`eval/lora-${ablation}-ablated.jsonl`);
      const rows = await readJsonl<{ correct: boolean; index: number; ablated?: string }>(path.join(a(), row.file));
      expect(rows.map((r) => r.index)).toEqual(Array.from({ length: QUICK_SIZES.heldout }, (_, i) => i));
      expect(new Set(rows.map((r) => r.ablated))).toEqual(new Set([ablation]));
      expect(row.correct).toBe(rows.filter((r) => r.correct).length);
      if (lora.correct === base.correct) expect(row.gain_kept_percent).toBeNull();
      else expect(row.gain_kept_percent!).toBeCloseTo((100 * (row.accuracy - base.accuracy)) / (lora.accuracy - base.accuracy), 9);
      expect(table.compare.table2!.recovery[role].toy ?? null).toEqual(row.gain_kept_percent);
    }
    const html = await fs.readFile(path.join(a(), 'report.html'), 'utf8');
    expect(html).toContain('Table 2: accuracy with adapters removed');
    expect(html).toContain('KL / cross-entropy when adapters are ablated');
    for (const ablation of ['mlp', 'attention'] as const) {
      const row = table.table2[ablation];
      expect(html).toContain(`${row.correct}/${row.n}`);
      expect(html).toContain(row.gain_kept_percent === null ? 'undefined (rank 1 = base)' : `${row.gain_kept_percent.toFixed(1)}%`);
      expect(html).toContain(`href="eval/lora-${ablation}-ablated.jsonl"`);
    }
  });

  it('report.html carries Table 1\'s numbers, embeds the figures, escapes its text, and shows how to run autointerp', async () => {
    const html = await fs.readFile(path.join(a(), 'report.html'), 'utf8');
    const table = await readJson<Table1>(path.join(a(), 'table1.json'));
    for (const role of ['base', 'lora', 'full'] as const) {
      expect(html).toContain(`${(100 * table[role].accuracy).toFixed(1)}%`);
      expect(html).toContain(`${table[role].correct}/${table[role].n}`);
    }
    expect(html).toContain(table.recovery_percent === null ? 'n/a' : `${table.recovery_percent.toFixed(1)}%`);
    const images = [...html.matchAll(/<img src="data:image\/svg\+xml;base64,([A-Za-z0-9+/=]+)"/g)].map((m) => Buffer.from(m[1]!, 'base64').toString('utf8'));
    expect(images.length).toBeGreaterThanOrEqual(5);
    expect(images).toContain(await fs.readFile(path.join(a(), 'ablation/adapter-heatmap.svg'), 'utf8'));
    expect(images).toContain(await fs.readFile(path.join(a(), 'ablation/kl-by-layer.svg'), 'utf8'));
    for (const href of ['table1.json', 'ablation/ablation.json', 'store/index.json', 'topk/features.jsonl', 'sae-features/features.jsonl', 'sae/metrics.json']) {
      expect(html).toContain(`href="${href}"`);
    }
    // Contexts hold chat markup such as <|im_start|>: only ever as text, so the only tags are the template's.
    expect(html).not.toMatch(/<\|im_(start|end)\|>/);
    const tags = new Set([...html.matchAll(/<\/?([!a-zA-Z][a-zA-Z0-9]*)/g)].map((m) => m[1]!.toLowerCase()));
    expect([...tags].filter((t) => !TEMPLATE_TAGS.includes(t))).toEqual([]);
    expect(html).toContain('rank1 serve --model models/toy');
    // The dashboard (with the playground: the base and the adapter just trained embedded) and its link.
    expect(html).toContain('href="dashboard/index.html"');
    for (const file of ['index.html', 'app.js', 'data/index.js', 'data/features-000.js', 'playground.html', 'data/model.js', 'data/worker.js']) {
      await fs.access(path.join(a(), 'dashboard', file));
    }
    const modelData = await fs.readFile(path.join(a(), 'dashboard/data/model.js'), 'utf8');
    const adapterWeights = (await fs.readFile(path.join(a(), 'lora/adapter_model.safetensors'))).toString('base64');
    expect(modelData).toContain(`"adapterWeights":"${adapterWeights}"`);
  });

  it.runIf(browserTests)('in headless Chromium: report.html, the dashboard and the playground open and run with no console errors', async () => {
    // What the playground must generate: the base with the adapter the demo trained, decoded here in Node.
    const question = 'Start with 7, then (1) +4, (2) *3. What is the last digit of the result?';
    const toy = path.join(root, 'models/toy');
    const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
    await loadPeftAdapter(path.join(a(), 'lora'), model);
    const session = new PlaygroundSession(model, (await loadTokenizer(toy))!, await loadChatTemplate(toy));
    const expected: string[] = [];
    for await (const token of session.generate({ question, maxTokens: 4 })) expected.push(token.text);
    model.dispose();
    expect(expected.length).toBeGreaterThan(0);
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(`file://${path.join(a(), 'report.html')}`);
      expect(await page.locator('img').count()).toBeGreaterThanOrEqual(5);
      await page.click('a[href="dashboard/index.html"]');
      await page.waitForSelector('tr.feature-row');
      const features = (await readJsonl(path.join(a(), 'topk/features.jsonl'))).length + (await readJsonl(path.join(a(), 'sae-features/features.jsonl'))).length;
      expect(await page.textContent('[data-testid=count]')).toBe(`${features} of ${features} features`);
      await page.click('a[href="playground.html"]');
      await page.waitForFunction(() => /^(ready|error)/.test(document.querySelector('[data-testid=status]')?.textContent ?? ''), null, { timeout: 60_000 });
      expect(await page.textContent('[data-testid=status]')).toMatch(/^ready · .* · \d+ adapters$/);
      expect(await page.textContent('[data-testid=status]')).toMatch(new RegExp(`^ready · .* · ${session.hooks.length} adapters$`));
      await page.fill('input[name=question]', question);
      await page.fill('input[name=max-tokens]', '4');
      await page.click('[data-testid=generate]');
      await page.waitForFunction(() => /^(done|error)/.test(document.querySelector('[data-testid=status]')?.textContent ?? ''), null, { timeout: 60_000 });
      // The demo's own adapter in the page: Node's tokens, one strip column each.
      expect(await page.textContent('[data-testid=status]')).toMatch(new RegExp(`^done: ${expected.length} tokens`));
      expect(await page.textContent('[data-testid=output]')).toBe(expected.join(''));
      expect(Math.round((await page.locator('[data-testid=strip]').boundingBox())!.width)).toBe(expected.length * 12);
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  }, 120_000);

  it('is deterministic with --seed, and with --endpoint labels every feature and links the labels', async () => {
    expect(labelled.code, labelled.stderr).toBe(0);
    const first = await readJson<Table1>(path.join(a(), 'table1.json'));
    const second = await readJson<Table1>(path.join(b(), 'table1.json'));
    for (const role of ['base', 'lora', 'full'] as const) expect(second[role].correct).toBe(first[role].correct);
    expect(second.recovery_percent).toEqual(first.recovery_percent);
    const klOf = async (d: string) => (await readJson<{ groups: { kl: number }[] }>(path.join(d, 'ablation/ablation.json'))).groups.map((g) => g.kl);
    expect(await klOf(b())).toEqual(await klOf(a()));
    // The same generations, token for token (only the wall-clock seconds differ).
    const outputs = async (d: string, role: string) => (await readJsonl<{ output: string; tokensGenerated: number }>(path.join(d, `eval/${role}.jsonl`))).map((r) => [r.output, r.tokensGenerated]);
    expect(await outputs(b(), 'lora')).toEqual(await outputs(a(), 'lora'));
    // The full finetune in a second process (the first run, on 2+ cores) and in this one (--one-process): the
    // same weights, bit for bit, and the same generations.
    expect(await fs.readFile(path.join(b(), 'full/model.safetensors'))).toEqual(await fs.readFile(path.join(a(), 'full/model.safetensors')));
    expect(await outputs(b(), 'full')).toEqual(await outputs(a(), 'full'));
    const alongside = async (d: string) => (await readJson<DemoSummary>(path.join(d, 'demo.json'))).timings.filter((t) => t.alongside).map((t) => t.step);
    expect(await alongside(b())).toEqual([]);

    const features = (await readJsonl(path.join(b(), 'topk/features.jsonl'))).length + (await readJsonl(path.join(b(), 'sae-features/features.jsonl'))).length;
    const explanations = await readJsonl<{ feature: string; explanation: string | null; category: string | null }>(path.join(b(), 'interpret/explanations.jsonl'));
    expect(explanations).toHaveLength(features);
    expect(explanations.every((e) => e.explanation !== null && e.category !== null)).toBe(true);
    expect(explainer.requests()).toBeGreaterThanOrEqual(2 * features + 1);
    const summary = await readJson<DemoSummary>(path.join(b(), 'demo.json'));
    expect(summary.autointerp).toEqual({ explained: features, features, categories: 5, errors: 0 });
    const html = await fs.readFile(path.join(b(), 'report.html'), 'utf8');
    expect(html).toContain('href="interpret/explanations.jsonl"');
    expect(html).toContain(`${features} of ${features} features explained`);
    expect(labelled.stderr).not.toContain('rank1 interpret --features');
  });

  it('escapes what it shows, and links the dashboard only when dashboard/index.html exists', async () => {
    // A demo folder without a dashboard (the quick runs build one).
    const bare = path.join(dir, 'no-dashboard');
    await fs.rm(bare, { recursive: true, force: true });
    await fs.mkdir(bare, { recursive: true });
    const summary = await readJson<DemoSummary>(path.join(a(), 'demo.json'));
    const hostile: FeatureTopExamples = {
      feature: 'L0_q_proj_pos', hook: 'model.layers.0.self_attn.q_proj', polarity: 'pos', active_count: 3, mean: 1, max: 2, histogram: { edges: [0, 1], counts: [3] },
      examples: [{ example: 0, position: 1, value: 2, context_ids: [1, 2, 3], context_tokens: ['a', '<script>alert("x")</script>', ' & b'], center: 1 }],
    };
    const input = { out: bare, summary, topFeatures: [{ feature: hostile, kl: 0.5 }], latents: [], autointerpHint: ['rank1 serve --model models/toy & echo "<done>"'] };
    const report = path.join(dir, 'report-check.html');
    await writeReport(report, input);
    const html = await fs.readFile(report, 'utf8');
    expect(html).toContain('a<mark title="2.000">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</mark> &amp; b');
    expect(html).toContain('rank1 serve --model models/toy &amp; echo &quot;&lt;done&gt;&quot;');
    expect(html).not.toContain('<script');
    expect(html).not.toContain('href="dashboard/index.html"');
    await fs.mkdir(path.join(bare, 'dashboard'), { recursive: true });
    await fs.writeFile(path.join(bare, 'dashboard/index.html'), '<!doctype html>');
    await writeReport(report, input);
    expect(await fs.readFile(report, 'utf8')).toContain('href="dashboard/index.html"');
  });
});

describe('rank1 demo inputs', () => {
  it('escapes every string of the report context', () => {
    expect(escapeHtml('<a href="x">Tom & Jerry\'s</a>')).toBe('&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;');
    expect(escapeDeep({ a: ['<b>', 1, null, { c: '&' }], d: true })).toEqual({ a: ['&lt;b&gt;', 1, null, { c: '&amp;' }], d: true });
  });

  it('takes --endpoint and --explainer-model together, as a URL', () => {
    expect(demoEndpoint({ apiKeyEnv: 'RANK1_TEST_NO_KEY' })).toBeUndefined();
    expect(demoEndpoint({ endpoint: 'http://127.0.0.1:8000/v1', explainerModel: 'toy', apiKeyEnv: 'RANK1_TEST_NO_KEY' })).toEqual({ url: 'http://127.0.0.1:8000/v1', model: 'toy' });
    expect(() => demoEndpoint({ endpoint: 'http://127.0.0.1:8000/v1', apiKeyEnv: 'X' })).toThrow(/--explainer-model/);
    expect(() => demoEndpoint({ explainerModel: 'toy', apiKeyEnv: 'X' })).toThrow(/--endpoint/);
    expect(() => demoEndpoint({ endpoint: 'not a url', explainerModel: 'toy', apiKeyEnv: 'X' })).toThrow(/--endpoint must be a URL/);
    expect(() => demoEndpoint({ endpoint: 'ftp://host/v1', explainerModel: 'toy', apiKeyEnv: 'X' })).toThrow(/--endpoint must be an http/);
  });

  it('refuses an --out that is a file or a folder of something else, and clears an earlier demo\'s', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-demo-out-'));
    try {
      const file = path.join(dir, 'file');
      await fs.writeFile(file, 'x');
      await expect(prepareDemoFolder(file)).rejects.toThrow(/--out .* is a file/);
      const other = path.join(dir, 'other');
      await fs.mkdir(other);
      await fs.writeFile(path.join(other, 'notes.txt'), 'mine');
      await expect(prepareDemoFolder(other)).rejects.toThrow(/--out .* is not empty and holds no earlier rank1 demo/);
      expect(await fs.readFile(path.join(other, 'notes.txt'), 'utf8')).toBe('mine');
      const earlier = path.join(dir, 'earlier');
      await fs.mkdir(path.join(earlier, 'interpret/cache'), { recursive: true });
      await fs.mkdir(path.join(earlier, 'store'), { recursive: true });
      await fs.writeFile(path.join(earlier, 'demo.json'), JSON.stringify({ format: 'rank1-demo' }));
      await fs.writeFile(path.join(earlier, 'interpret/explanations.jsonl'), '');
      await fs.writeFile(path.join(earlier, 'interpret/cache/answer.json'), '{}');
      await prepareDemoFolder(earlier);
      expect((await fs.readdir(earlier)).sort()).toEqual(['interpret']);
      expect(await fs.readdir(path.join(earlier, 'interpret'))).toEqual(['cache']);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('names the flag of a bad --seed', async () => {
    const result = await rank1(['demo', '--quick', '--seed', 'abc', '--out', path.join(os.tmpdir(), 'rank1-demo-never')]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/--seed/);
    expect(result.stderr).toMatch(/expected a non-negative integer, got "abc"/);
  });
});
