// The models one `rank1 serve` answers to, as vLLM's `--lora-modules NAME=DIR …` has them: the base under its
// own name and each rank-1 adapter under its name. A request's `model` picks the adapter its sequence decodes
// with; sequences of different adapters share each decode step (per-row adapters, ForwardOptions.adapterRows).
import type { LoraAdapters } from '../model/lora.ts';
import { ApiError } from './protocol.ts';

/** `NAME=DIR` as vLLM's --lora-modules takes it (also a JSON object {"name", "path"}). */
export function parseLoraModule(spec: string): { name: string; dir: string } {
  const trimmed = spec.trim();
  if (trimmed.startsWith('{')) {
    const json = JSON.parse(trimmed) as { name?: unknown; path?: unknown };
    if (typeof json.name !== 'string' || typeof json.path !== 'string') throw new Error(`--lora-modules ${spec}: a JSON module needs "name" and "path"`);
    return { name: json.name, dir: json.path };
  }
  const at = trimmed.indexOf('=');
  if (at <= 0 || at === trimmed.length - 1) throw new Error(`--lora-modules takes NAME=DIR, got "${spec}"`);
  return { name: trimmed.slice(0, at), dir: trimmed.slice(at + 1) };
}

/** Every served model name (the base first) — what GET /v1/models lists. */
export function servedModelNames(baseId: string, loraModules: ReadonlyMap<string, LoraAdapters> | undefined): string[] {
  return [baseId, ...(loraModules?.keys() ?? [])];
}

/** The adapter a request's `model` names (null: the base), or a 404 naming what is served. */
export function adapterForModel(name: string, baseId: string, loraModules: ReadonlyMap<string, LoraAdapters> | undefined): LoraAdapters | null {
  if (name === baseId) return null;
  const adapter = loraModules?.get(name);
  if (adapter) return adapter;
  const served = servedModelNames(baseId, loraModules).map((n) => `"${n}"`).join(', ');
  throw new ApiError(404, `model "${name}" not found; this server serves ${served}`, 'not_found_error', 'model', 'model_not_found');
}
