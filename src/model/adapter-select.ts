// Choosing adapters by name, for two uses that are one model: zero-ablating them during an evaluation
// (`rank1 eval --ablate`) and writing a PEFT folder without them (`rank1 adapter select`). A projection with a
// rank-1 adapter computes y = W x + b + scale · B (A·x); zero-ablating the hook A·x leaves y = W x + b + 0, which
// is what the projection computes when its adapter is absent from the folder.
//
// A selection is comma-separated items, each one of
//   mlp | attention                     every MLP (gate, up, down) or attention (q, k, v, o) adapter
//   q_proj, gate_proj, …                that projection's adapter in every layer
//   model.layers.3.self_attn.q_proj     one adapter, by its PEFT module path (= its hook name)
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { PROJECTIONS, isAttentionProjection, parseAdapterHookName, type Projection } from './hooks.ts';
import { zeroAblate, type HookFn } from './hook-registry.ts';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from './load.ts';
import { readSafetensorsHeader, readTensorData, writeSafetensors, type TensorToWrite } from './safetensors.ts';
import { writeFileAtomic } from '../io/atomic.ts';

/** What `--ablate`, `--drop` and `--keep` accept, for --help. */
export const MODULE_SELECTION_HELP =
  'mlp, attention, a projection name (q_proj = every layer\'s q_proj) or a PEFT module path (model.layers.3.self_attn.q_proj); comma-separated';

export const MODULE_GROUPS = ['mlp', 'attention'] as const;
export type ModuleGroup = (typeof MODULE_GROUPS)[number];

const isProjection = (name: string): name is Projection => (PROJECTIONS as readonly string[]).includes(name);

/** Module paths in the paper's order: by layer, then gate, up, down, q, k, v, o. */
export function sortModules(modules: Iterable<string>): string[] {
  const order = (name: string) => {
    const parsed = parseAdapterHookName(name)!;
    return 7 * parsed.layer + PROJECTIONS.indexOf(parsed.projection);
  };
  return [...new Set(modules)].sort((a, b) => order(a) - order(b));
}

const projectionOf = (module: string): Projection => parseAdapterHookName(module)!.projection;

/** `q_proj in layers 0–3; down_proj in layers 1, 2`: what an adapter has, for error messages. */
export function describeModules(available: readonly string[]): string {
  const parts = PROJECTIONS.flatMap((projection) => {
    const layers = available.filter((m) => projectionOf(m) === projection).map((m) => parseAdapterHookName(m)!.layer).sort((a, b) => a - b);
    if (layers.length === 0) return [];
    const contiguous = layers.every((l, i) => l === layers[0]! + i);
    const shown = layers.length > 1 && contiguous ? `${layers[0]}–${layers.at(-1)}` : layers.join(', ');
    return [`${projection} in layer${layers.length > 1 ? 's' : ''} ${shown}`];
  });
  return parts.length === 0 ? 'no adapters' : parts.join('; ');
}

/**
 * The module paths a selection names, in the paper's order, out of `available` (the adapter's module paths).
 * An item that is not a group, a projection or a module path, or that names nothing the adapter has, is an
 * error naming it and listing what the adapter has; `what` names the adapter in it.
 */
export function resolveModuleSelection(selection: string, available: readonly string[], what: string): string[] {
  const items = selection.split(',').map((item) => item.trim()).filter((item) => item !== '');
  if (items.length === 0) throw new Error(`empty module selection "${selection}": expected ${MODULE_SELECTION_HELP}`);
  const has = new Set(available);
  const chosen = new Set<string>();
  const listing = () => `${what} has ${describeModules(available)}`;
  for (const item of items) {
    const module = item.replace(/^base_model\.model\./, '');
    let matched: string[];
    if (item === 'mlp' || item === 'attention') {
      matched = available.filter((m) => isAttentionProjection(projectionOf(m)) === (item === 'attention'));
      if (matched.length === 0) throw new Error(`"${item}": ${what} has no ${item === 'mlp' ? 'MLP' : 'attention'} adapters (it has ${describeModules(available)})`);
    } else if (isProjection(item)) {
      matched = available.filter((m) => projectionOf(m) === item);
      if (matched.length === 0) throw new Error(`"${item}": ${what} has no ${item} adapters (it has ${describeModules(available)})`);
    } else if (parseAdapterHookName(module)) {
      if (!has.has(module)) throw new Error(`"${item}": ${what} has no adapter at ${module}; ${listing()}`);
      matched = [module];
    } else {
      throw new Error(`unknown module "${item}": expected ${MODULE_SELECTION_HELP}; ${listing()}`);
    }
    for (const m of matched) chosen.add(m);
  }
  return sortModules(chosen);
}

/**
 * The shortest selection naming exactly `modules` out of `available`: `mlp` or `attention` when it is all of
 * one, else a projection name where every one of its adapters is in, module paths for the rest. Recorded in
 * each row of an ablated evaluation, so a results file says what was removed.
 */
export function selectionLabel(modules: readonly string[], available: readonly string[]): string {
  const chosen = new Set(modules);
  for (const group of MODULE_GROUPS) {
    const members = available.filter((m) => isAttentionProjection(projectionOf(m)) === (group === 'attention'));
    if (members.length > 0 && members.length === chosen.size && members.every((m) => chosen.has(m))) return group;
  }
  return PROJECTIONS.flatMap((projection) => {
    const all = available.filter((m) => projectionOf(m) === projection);
    const picked = all.filter((m) => chosen.has(m));
    if (picked.length === 0) return [];
    return picked.length === all.length ? [projection] : sortModules(picked);
  }).join(',');
}

/** Zero-ablation hooks for `withHooks`: each named adapter's A·x replaced by zeros. */
export function zeroAblationHooks(modules: readonly string[]): [string, HookFn][] {
  return modules.map((module) => [module, zeroAblate]);
}

// ---- PEFT folders --------------------------------------------------------------------------------

/** `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight` → `model.layers.3.self_attn.q_proj`. */
const PEFT_TENSOR = /^base_model\.model\.(model\.layers\.\d+\.(?:self_attn|mlp)\.\w+)\.lora_[AB](?:\.default)?\.weight$/;

export type SelectMode = 'drop' | 'keep';

export interface SelectAdapterResult {
  kept: string[];
  dropped: string[];
  /** adapter_config.json's new target_modules. */
  targetModules: string[];
}

async function readAdapterConfig(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    throw new Error(`cannot read ${file}: ${(error as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file} is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${file}: expected a JSON object`);
  const modules = (json as Record<string, unknown>)['target_modules'];
  if (!Array.isArray(modules) || modules.some((m) => typeof m !== 'string')) {
    throw new Error(`${file}: target_modules must be a list of module names, got ${JSON.stringify(modules)}`);
  }
  return json as Record<string, unknown>;
}

/**
 * target_modules for the kept adapters, as PEFT matches them: a projection's name where the source targeted it
 * by name and every one of its adapters is kept (PEFT then adapts it in every layer, as before), else the kept
 * modules' paths (PEFT matches a listed path exactly; vLLM loads what the weights file holds).
 */
function targetModulesFor(kept: readonly string[], available: readonly string[], sourceTargets: readonly string[]): string[] {
  const keep = new Set(kept);
  return PROJECTIONS.flatMap((projection) => {
    const all = available.filter((m) => projectionOf(m) === projection);
    const picked = all.filter((m) => keep.has(m));
    if (picked.length === 0) return [];
    return picked.length === all.length && sourceTargets.includes(projection) ? [projection] : picked;
  });
}

/**
 * Writes a PEFT adapter folder at `out` holding the adapters of `dir` without (`drop`) or with only (`keep`)
 * the selected modules: their tensors copied as stored (same dtype, same bytes), adapter_config.json as it was
 * but for target_modules.
 */
export async function selectAdapterFolder(dir: string, mode: SelectMode, selection: string, out: string): Promise<SelectAdapterResult> {
  if (path.resolve(dir) === path.resolve(out)) throw new Error(`--out ${out} is the adapter folder itself: write the selection to a new folder`);
  const configFile = path.join(dir, ADAPTER_CONFIG_FILE);
  const weightsFile = path.join(dir, ADAPTER_WEIGHTS_FILE);
  const config = await readAdapterConfig(configFile);
  const header = await readSafetensorsHeader(weightsFile);
  const moduleOf = new Map<string, string>();
  for (const name of header.tensors.keys()) {
    const match = PEFT_TENSOR.exec(name);
    if (!match || !parseAdapterHookName(match[1]!)) throw new Error(`${weightsFile}: tensor "${name}" is not a LoRA weight of a Qwen2 projection`);
    moduleOf.set(name, match[1]!);
  }
  const available = sortModules(moduleOf.values());
  const chosen = new Set(resolveModuleSelection(selection, available, `adapter ${dir}`));
  const kept = available.filter((m) => chosen.has(m) === (mode === 'keep'));
  const dropped = available.filter((m) => !kept.includes(m));
  if (kept.length === 0) throw new Error(`--${mode} ${selection} leaves no adapters of ${dir}: that is the base model (evaluate it without --adapter)`);
  const targetModules = targetModulesFor(kept, available, config['target_modules'] as string[]);

  await fs.mkdir(out, { recursive: true });
  const keptSet = new Set(kept);
  const tensors: TensorToWrite[] = [...header.tensors.values()]
    .filter((entry) => keptSet.has(moduleOf.get(entry.name)!))
    .map((entry) => ({ name: entry.name, dtype: entry.dtype, shape: entry.shape, data: () => readTensorData(weightsFile, entry) }));
  await writeSafetensors(path.join(out, ADAPTER_WEIGHTS_FILE), tensors, Object.keys(header.metadata).length > 0 ? header.metadata : undefined);
  const text = `${JSON.stringify({ ...config, target_modules: targetModules }, null, 2)}\n`;
  await writeFileAtomic(path.join(out, ADAPTER_CONFIG_FILE), async (handle) => {
    await handle.writeFile(text, 'utf8');
  });
  return { kept, dropped, targetModules };
}

/** The module paths of a loaded model's adapters, in the paper's order (empty without adapters). */
export function adapterModules(adapters: { adapters: ReadonlyMap<string, unknown> } | null): string[] {
  return adapters ? sortModules(adapters.adapters.keys()) : [];
}
