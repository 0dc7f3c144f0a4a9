// The dashboard app (Preact, bundled by esbuild into app.js). Routes live in the URL hash, so every view has
// a link and the site needs no server: #/ the feature list, #/feature/NAME one feature, #/overview the
// ablation figures and the KL / cross-entropy table. Feature details arrive in chunks (data/features-NNN.js) loaded on demand.
import { render } from 'preact';
import { useEffect, useMemo, useState } from 'preact/hooks';
import type { DashboardGlobals, DashboardIndex, FeatureDetail, FeatureSummary } from '../types.ts';
import { Example, format, loadChunk } from './shared.tsx';

const globals = window as unknown as Window & DashboardGlobals;
const PAGE = 100;
const CLASS_NAMES = ['specific', 'broad', 'polysemantic'] as const;
const KIND_NAMES: Record<string, string> = { adapter: 'adapter direction', mlp: 'MLP neuron', sae: 'SAE latent', other: 'other' };

function useHashRoute(): string {
  const [hash, setHash] = useState(location.hash || '#/');
  useEffect(() => {
    const update = () => setHash(location.hash || '#/');
    addEventListener('hashchange', update);
    return () => removeEventListener('hashchange', update);
  }, []);
  return hash;
}


// ---- the feature list ------------------------------------------------------------------------------

interface Filters {
  query: string;
  kind: string;
  layer: string;
  projection: string;
  polarity: string;
  cls: string;
  category: string;
  sort: 'active' | 'max' | 'kl' | 'name';
}

const EMPTY_FILTERS: Filters = { query: '', kind: '', layer: '', projection: '', polarity: '', cls: '', category: '', sort: 'active' };

function optionsOf(features: readonly FeatureSummary[], pick: (f: FeatureSummary) => string | number | null): string[] {
  const values = new Set<string>();
  for (const f of features) {
    const v = pick(f);
    if (v !== null) values.add(String(v));
  }
  return [...values].sort((a, b) => (Number.isFinite(Number(a)) && Number.isFinite(Number(b)) ? Number(a) - Number(b) : a.localeCompare(b)));
}

function Select(props: { label: string; value: string; options: string[]; onChange: (v: string) => void; names?: (v: string) => string }) {
  if (props.options.length === 0) return null;
  return (
    <label>
      {props.label}{' '}
      <select name={props.label} value={props.value} onChange={(e) => props.onChange((e.target as HTMLSelectElement).value)}>
        <option value="">all</option>
        {props.options.map((o) => <option value={o}>{props.names ? props.names(o) : o}</option>)}
      </select>
    </label>
  );
}

function FeatureList({ index }: { index: DashboardIndex }) {
  const [filters, setFilters] = useState<Filters>(() => ({ ...EMPTY_FILTERS, ...JSON.parse(sessionStorage.getItem('rank1-filters') ?? '{}') as Partial<Filters> }));
  const [page, setPage] = useState(0);
  const set = (patch: Partial<Filters>) => {
    const next = { ...filters, ...patch };
    setFilters(next);
    setPage(0);
    sessionStorage.setItem('rank1-filters', JSON.stringify(next));
  };
  const features = index.features;
  const choices = useMemo(() => ({
    kind: optionsOf(features, (f) => f.kind), layer: optionsOf(features, (f) => f.layer), projection: optionsOf(features, (f) => f.projection),
    polarity: optionsOf(features, (f) => f.polarity), cls: optionsOf(features, (f) => f.class), category: optionsOf(features, (f) => f.category),
  }), [features]);
  const shown = useMemo(() => {
    const words = filters.query.toLowerCase().split(/\s+/).filter(Boolean);
    const list = features.filter((f) => {
      if (filters.kind && f.kind !== filters.kind) return false;
      if (filters.layer && String(f.layer) !== filters.layer) return false;
      if (filters.projection && f.projection !== filters.projection) return false;
      if (filters.polarity && f.polarity !== filters.polarity) return false;
      if (filters.cls && String(f.class) !== filters.cls) return false;
      if (filters.category && f.category !== filters.category) return false;
      if (words.length) {
        const text = `${f.name} ${f.explanation ?? ''} ${f.category ?? ''}`.toLowerCase();
        if (!words.every((w) => text.includes(w))) return false;
      }
      return true;
    });
    const key: Record<Filters['sort'], (f: FeatureSummary) => number> = { active: (f) => f.active, max: (f) => Math.abs(f.max), kl: (f) => f.kl ?? -1, name: () => 0 };
    return filters.sort === 'name' ? list.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true })) : list.sort((a, b) => key[filters.sort](b) - key[filters.sort](a));
  }, [features, filters]);
  const pages = Math.max(1, Math.ceil(shown.length / PAGE));
  const rows = shown.slice(page * PAGE, (page + 1) * PAGE);
  return (
    <section>
      <div class="controls">
        <input type="search" placeholder="search names, explanations, categories" value={filters.query} onInput={(e) => set({ query: (e.target as HTMLInputElement).value })} />
        <Select label="kind" value={filters.kind} options={choices.kind} onChange={(kind) => set({ kind })} names={(k) => KIND_NAMES[k] ?? k} />
        <Select label="layer" value={filters.layer} options={choices.layer} onChange={(layer) => set({ layer })} />
        <Select label="projection" value={filters.projection} options={choices.projection} onChange={(projection) => set({ projection })} />
        <Select label="polarity" value={filters.polarity} options={choices.polarity} onChange={(polarity) => set({ polarity })} />
        <Select label="class" value={filters.cls} options={choices.cls} onChange={(cls) => set({ cls })} names={(c) => `${c} ${CLASS_NAMES[Number(c)] ?? ''}`} />
        <Select label="category" value={filters.category} options={choices.category} onChange={(category) => set({ category })} />
        <label>sort{' '}
          <select name="sort" value={filters.sort} onChange={(e) => set({ sort: (e.target as HTMLSelectElement).value as Filters['sort'] })}>
            <option value="active">activity</option>
            <option value="max">largest value</option>
            <option value="kl">ablation KL</option>
            <option value="name">name</option>
          </select>
        </label>
        <span class="count" data-testid="count">{shown.length} of {features.length} features</span>
      </div>
      <table>
        <thead><tr><th>feature</th><th>kind</th><th class="num">active tokens</th><th class="num">max</th><th class="num">ablation KL</th><th>class</th><th>explanation</th><th>category</th></tr></thead>
        <tbody>
          {rows.map((f) => (
            <tr class="feature-row" data-feature={f.name} onClick={() => (location.hash = `#/feature/${encodeURIComponent(f.name)}`)}>
              <td><a href={`#/feature/${encodeURIComponent(f.name)}`}>{f.name}</a></td>
              <td>{KIND_NAMES[f.kind] ?? f.kind}</td>
              <td class="num">{f.active}</td>
              <td class="num">{format(f.max)}</td>
              <td class="num">{format(f.kl, 4)}</td>
              <td>{f.class === null ? '—' : <span class={`badge class-${f.class}`}>{f.class} {CLASS_NAMES[f.class]}</span>}</td>
              <td>{f.explanation ?? ''}</td>
              <td>{f.category ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <div class="pager">
        <button disabled={page === 0} onClick={() => setPage(page - 1)}>previous</button>
        <span class="count">page {page + 1} of {pages}</span>
        <button disabled={page >= pages - 1} onClick={() => setPage(page + 1)}>next</button>
      </div>
    </section>
  );
}

// ---- one feature ------------------------------------------------------------------------------------

function Histogram({ edges, counts }: { edges: number[]; counts: number[] }) {
  const width = 480;
  const height = 120;
  const top = Math.max(1, ...counts);
  const bar = width / Math.max(1, counts.length);
  return (
    <svg class="histogram" width={width} height={height + 20} role="img" aria-label="activation histogram">
      {counts.map((c, i) => {
        const h = (c / top) * height;
        return <rect x={i * bar + 1} y={height - h} width={Math.max(1, bar - 2)} height={h} fill="#6b8fd6"><title>{`[${format(edges[i]!)}, ${format(edges[i + 1] ?? edges[i]!)}): ${c}`}</title></rect>;
      })}
      <text x="0" y={height + 15} font-size="11">{format(edges[0] ?? 0)}</text>
      <text x={width} y={height + 15} font-size="11" text-anchor="end">{format(edges.at(-1) ?? 0)}</text>
    </svg>
  );
}

function FeaturePage({ index, name }: { index: DashboardIndex; name: string }) {
  const summary = index.features.find((f) => f.name === name);
  const [detail, setDetail] = useState<FeatureDetail | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setDetail(null);
    if (!summary) return;
    loadChunk(summary.chunk).then((chunk) => setDetail(chunk.get(name) ?? null), (e: Error) => setError(e.message));
  }, [name]);
  if (!summary) return <p class="error">No feature named {name}. <a href="#/">Back to the list</a></p>;
  const scale = detail ? Math.max(1e-12, ...detail.examples.map((e) => Math.max(Math.abs(e.value), ...(e.values ?? []).map(Math.abs)))) : 1;
  return (
    <section>
      <p><a href="#/">← all features</a></p>
      <h2>{summary.name}</h2>
      <p class="meta">{KIND_NAMES[summary.kind]}{summary.layer !== null ? ` · layer ${summary.layer}` : ''}{summary.projection ? ` · ${summary.projection}` : ''}
        {summary.polarity ? ` · ${summary.polarity === 'pos' ? 'positive' : 'negative'} polarity` : ''} · {summary.active} active tokens · max {format(summary.max)}
        {summary.kl !== null ? ` · ablation KL ${format(summary.kl, 4)}` : ''}</p>
      <div class="panel">
        <strong>Explanation:</strong> <span data-testid="explanation">{summary.explanation ?? 'none (run rank1 interpret and pass --explanations)'}</span>
        {summary.class !== null && <> · <span class={`badge class-${summary.class}`}>class {summary.class} {CLASS_NAMES[summary.class]}</span></>}
        {summary.category && <> · category <em>{summary.category}</em></>}
      </div>
      {error && <p class="error">{error}</p>}
      {!detail && !error && <p class="loading">Loading examples…</p>}
      {detail && (
        <>
          <div class="panel"><h3>Activation histogram (|value|)</h3><Histogram edges={detail.histogram.edges} counts={detail.histogram.counts} /></div>
          {detail.decoder && (
            <div class="panel">
              <h3>Made of these adapters (decoder row, largest |weight| first)</h3>
              <table data-testid="decoder"><thead><tr><th>adapter</th><th class="num">weight</th></tr></thead>
                <tbody>{detail.decoder.map((d) => <tr><td>{d.hook}</td><td class="num">{format(d.weight, 4)}</td></tr>)}</tbody></table>
            </div>
          )}
          <h3>Top examples</h3>
          {detail.examples.map((e) => <Example example={e} scale={scale} />)}
        </>
      )}
    </section>
  );
}

// ---- overview -------------------------------------------------------------------------------------

function Overview({ index }: { index: DashboardIndex }) {
  const a = index.ablation;
  const counts = useMemo(() => {
    const byKind = new Map<string, number>();
    for (const f of index.features) byKind.set(f.kind, (byKind.get(f.kind) ?? 0) + 1);
    return [...byKind];
  }, [index]);
  return (
    <section>
      <div class="panel">
        <h2>Features</h2>
        <p>{counts.map(([kind, n]) => `${n} ${KIND_NAMES[kind] ?? kind}s`).join(', ')} from {index.sources.join(', ')}; generated {index.generated}.</p>
      </div>
      {!a && <p class="meta">No ablation given (rank1 dashboard --ablation ablation.json adds Figure 1 and the KL / cross-entropy of ablated adapter groups here).</p>}
      {a && (
        <>
          <div class="panel">
            <h2>KL / cross-entropy when adapter groups are ablated</h2>
            <p class="meta">{a.examples} sequences, {a.tokens} tokens; full model cross-entropy {format(a.fullCe, 4)} nats.</p>
            <table data-testid="table2">
              <thead><tr><th>adapters zeroed</th><th class="num">count</th><th class="num">KL(full ‖ ablated)</th><th class="num">cross-entropy</th><th class="num">Δ cross-entropy</th></tr></thead>
              <tbody>
                <tr><td>none (full model)</td><td class="num">0</td><td class="num">0</td><td class="num">{format(a.fullCe, 4)}</td><td class="num">0</td></tr>
                {a.table.map((r) => <tr><td>{r.label}</td><td class="num">{r.adapters}</td><td class="num">{format(r.kl, 4)}</td><td class="num">{format(r.ce, 4)}</td><td class="num">{format(r.ce - a.fullCe, 4)}</td></tr>)}
              </tbody>
            </table>
          </div>
          <div class="panel figure"><h2>Figure 1: KL per adapter</h2><div dangerouslySetInnerHTML={{ __html: a.heatmapSvg }} /></div>
          <div class="panel figure"><h2>KL per layer</h2><div dangerouslySetInnerHTML={{ __html: a.klByLayerSvg }} /></div>
          <div class="panel">
            <h2>Largest single adapters</h2>
            <table><thead><tr><th>adapter</th><th class="num">KL</th><th class="num">Δ cross-entropy</th></tr></thead>
              <tbody>{a.topAdapters.map((r) => <tr><td>{r.hook}</td><td class="num">{format(r.kl, 4)}</td><td class="num">{format(r.ce - a.fullCe, 4)}</td></tr>)}</tbody></table>
          </div>
        </>
      )}
    </section>
  );
}

// ---- the app --------------------------------------------------------------------------------------

function App({ index }: { index: DashboardIndex }) {
  const route = useHashRoute();
  const feature = /^#\/feature\/(.+)$/.exec(route);
  const view = feature ? 'feature' : route.startsWith('#/overview') ? 'overview' : 'list';
  useEffect(() => {
    document.title = feature ? `${decodeURIComponent(feature[1]!)} · ${index.title}` : index.title;
  }, [route]);
  return (
    <>
      <header>
        <h1>{index.title}</h1>
        <a href="#/" class={view === 'list' ? 'active' : ''}>features</a>
        <a href="#/overview" class={view === 'overview' ? 'active' : ''}>overview</a>
        {index.playground && <a href="playground.html">playground</a>}
      </header>
      <main>
        {view === 'list' && <FeatureList index={index} />}
        {view === 'feature' && <FeaturePage index={index} name={decodeURIComponent(feature![1]!)} />}
        {view === 'overview' && <Overview index={index} />}
      </main>
    </>
  );
}

const root = document.getElementById('app')!;
root.textContent = ''; // the static "Loading…" placeholder
if (globals.RANK1_DASHBOARD_INDEX) render(<App index={globals.RANK1_DASHBOARD_INDEX} />, root);
else root.innerHTML = '<p class="error">data/index.js did not load: rebuild the dashboard with rank1 dashboard.</p>';
