// From files to a model: a Hugging Face checkpoint folder to a Qwen2Model, and PEFT adapter folders
// (adapter_config.json + adapter_model.safetensors) to and from rank-1 LoRA adapters.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Backend } from '../kernels/backend.ts';
import { Tensor, keep } from '../tensor/tensor.ts';
import { cast, reshape } from '../tensor/ops.ts';
import { requireGrad } from '../tensor/autograd.ts';
import { openCheckpoint, type LoadProgress } from './checkpoint.ts';
import type { Qwen2Config } from './config.ts';
import { PROJECTIONS, adapterHookName, parseAdapterHookName, type Projection } from './hooks.ts';
import { LoraAdapters, projectionDims, type LoraSettings, type RankOneAdapter } from './lora.ts';
import { Qwen2Model, type LinearWeights, type Qwen2Dims } from './qwen2.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { readSafetensorsHeader, readTensorData, writeSafetensors, type HostData, type SafetensorsEntry, type SafetensorsHeader, type TensorToWrite } from './safetensors.ts';

export function dimsFromConfig(config: Qwen2Config): Qwen2Dims {
  return {
    hidden: config.hiddenSize,
    intermediate: config.intermediateSize,
    layers: config.numHiddenLayers,
    heads: config.numAttentionHeads,
    kvHeads: config.numKeyValueHeads,
    headDim: config.headDim,
    vocab: config.vocabSize,
    ropeTheta: config.ropeTheta,
    rmsNormEps: config.rmsNormEps,
    tieWordEmbeddings: config.tieWordEmbeddings,
  };
}

export interface LoadedModel {
  model: Qwen2Model;
  config: Qwen2Config;
  warnings: readonly string[];
}

/**
 * A Qwen2Model from tensors keyed by their checkpoint names (the layout of expectedQwen2Tensors); `what`
 * names the source in errors.
 */
export function qwen2FromTensors(config: Qwen2Config, tensors: ReadonlyMap<string, Tensor>, backend: Backend, what: string): Qwen2Model {
  const get = (name: string): Tensor => {
    const t = tensors.get(name);
    if (!t) throw new Error(`${what}: tensor ${name} is missing`);
    return t;
  };
  const dims = dimsFromConfig(config);
  const linearOf = (prefix: string, bias: boolean): LinearWeights =>
    bias ? { weight: get(`${prefix}.weight`), bias: get(`${prefix}.bias`) } : { weight: get(`${prefix}.weight`) };
  const layers = Array.from({ length: dims.layers }, (_, l) => {
    const p = `model.layers.${l}`;
    return {
      inputLayernorm: get(`${p}.input_layernorm.weight`),
      qProj: linearOf(`${p}.self_attn.q_proj`, true),
      kProj: linearOf(`${p}.self_attn.k_proj`, true),
      vProj: linearOf(`${p}.self_attn.v_proj`, true),
      oProj: linearOf(`${p}.self_attn.o_proj`, false),
      postAttentionLayernorm: get(`${p}.post_attention_layernorm.weight`),
      gateProj: linearOf(`${p}.mlp.gate_proj`, false),
      upProj: linearOf(`${p}.mlp.up_proj`, false),
      downProj: linearOf(`${p}.mlp.down_proj`, false),
    };
  });
  return new Qwen2Model(dims, {
    embedTokens: get('model.embed_tokens.weight'),
    layers,
    norm: get('model.norm.weight'),
    ...(dims.tieWordEmbeddings ? {} : { lmHead: get('lm_head.weight') }),
  }, backend);
}

/** Loads a Qwen2 checkpoint folder; weights keep their storage dtype (bf16 stays bf16). */
export async function loadQwen2Checkpoint(dir: string, backend: Backend, onProgress?: (p: LoadProgress) => void): Promise<LoadedModel> {
  const checkpoint = await openCheckpoint(dir);
  const tensors = await checkpoint.loadAll(backend, onProgress);
  for (const t of tensors.values()) keep(t);
  const model = qwen2FromTensors(checkpoint.config, tensors, backend, `checkpoint ${dir}`);
  return { model, config: checkpoint.config, warnings: checkpoint.warnings };
}

/** The model's weights by their checkpoint names (the inverse of loading), e.g. for writeCheckpoint. */
export function modelTensors(model: Qwen2Model): Map<string, Tensor> {
  const w = model.weights;
  const out = new Map<string, Tensor>([['model.embed_tokens.weight', w.embedTokens]]);
  w.layers.forEach((layer, l) => {
    const p = `model.layers.${l}`;
    out.set(`${p}.input_layernorm.weight`, layer.inputLayernorm);
    const linears: [string, LinearWeights][] = [
      ['self_attn.q_proj', layer.qProj], ['self_attn.k_proj', layer.kProj], ['self_attn.v_proj', layer.vProj],
      ['self_attn.o_proj', layer.oProj], ['mlp.gate_proj', layer.gateProj], ['mlp.up_proj', layer.upProj], ['mlp.down_proj', layer.downProj],
    ];
    for (const [name, lin] of linears) {
      out.set(`${p}.${name}.weight`, lin.weight);
      if (lin.bias) out.set(`${p}.${name}.bias`, lin.bias);
    }
    out.set(`${p}.post_attention_layernorm.weight`, layer.postAttentionLayernorm);
  });
  out.set('model.norm.weight', w.norm);
  if (w.lmHead) out.set('lm_head.weight', w.lmHead);
  return out;
}

/** Shorthand for loadQwen2Checkpoint(...).model. */
export async function loadQwen2(dir: string, backend: Backend): Promise<Qwen2Model> {
  return (await loadQwen2Checkpoint(dir, backend)).model;
}

// ---- PEFT adapters -------------------------------------------------------------------------------

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
const PEFT_PREFIX = 'base_model.model.';

/** `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight` (PEFT strips the adapter name on save). */
export function peftKey(layer: number, projection: Projection, matrix: 'A' | 'B'): string {
  return `${PEFT_PREFIX}${adapterHookName(layer, projection)}.lora_${matrix}.weight`;
}

/** A PEFT weight's key: the prefix, the adapted module's path (its hook name), the matrix. */
const PEFT_KEY_PATTERN = /^base_model\.model\.(.+)\.lora_(A|B)(?:\.default)?\.weight$/;

function settingsFromPeftConfig(json: unknown, file: string): LoraSettings {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${file}: expected a JSON object`);
  const c = json as Record<string, unknown>;
  const field = (name: string) => c[name];
  if (field('peft_type') !== undefined && field('peft_type') !== 'LORA') {
    throw new Error(`${file}: peft_type is ${JSON.stringify(field('peft_type'))}; rank1 reads LORA adapters only`);
  }
  const r = field('r');
  if (r !== 1) throw new Error(`${file}: r is ${JSON.stringify(r)}; rank1 works with rank-1 adapters only (r = 1)`);
  const alpha = field('lora_alpha') ?? 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw new Error(`${file}: lora_alpha must be a number, got ${JSON.stringify(alpha)}`);
  const bias = field('bias') ?? 'none';
  if (bias !== 'none') throw new Error(`${file}: bias is ${JSON.stringify(bias)}; only "none" is supported (no trained biases)`);
  if (field('use_dora') === true) throw new Error(`${file}: use_dora is true; DoRA adapters are not rank-1 LoRA`);
  const modules = field('target_modules');
  if (!Array.isArray(modules) || modules.some((m) => typeof m !== 'string')) {
    throw new Error(`${file}: target_modules must be a list of module names, got ${JSON.stringify(modules)}`);
  }
  // A projection (every layer's) or, as PEFT also matches, one module by its path (model.layers.3.self_attn.q_proj).
  const projectionOf = (m: string): Projection | undefined => PROJECTIONS.find((p) => p === m) ?? parseAdapterHookName(m)?.projection;
  const unknown = modules.filter((m) => projectionOf(m) === undefined);
  if (unknown.length > 0) {
    throw new Error(`${file}: target_modules ${JSON.stringify(unknown)} are not Qwen2 projections (${PROJECTIONS.join(', ')}) or their module paths (model.layers.3.self_attn.q_proj)`);
  }
  const dropout = field('lora_dropout') ?? 0;
  const named = modules.some((m) => !(PROJECTIONS as readonly string[]).includes(m));
  return {
    r: 1,
    loraAlpha: alpha,
    useRslora: field('use_rslora') === true,
    loraDropout: typeof dropout === 'number' ? dropout : 0,
    targetModules: PROJECTIONS.filter((p) => modules.some((m) => projectionOf(m) === p)),
    ...(named ? { peftTargetModules: [...modules] } : {}),
    baseModelNameOrPath: typeof field('base_model_name_or_path') === 'string' ? (field('base_model_name_or_path') as string) : '',
  };
}

/** Whether target_modules covers this layer's projection: by the projection's name, or by the module's path. */
function isTargeted(settings: LoraSettings, layer: number, projection: Projection): boolean {
  if (!settings.peftTargetModules) return settings.targetModules.includes(projection);
  return settings.peftTargetModules.includes(projection) || settings.peftTargetModules.includes(adapterHookName(layer, projection));
}

/**
 * Reads a PEFT adapter folder (as saved by Python PEFT or by rank1) for `model`, installs it as
 * model.adapters (disposing any before) and returns it.
 */
export async function loadPeftAdapter(dir: string, model: Qwen2Model): Promise<LoraAdapters> {
  const adapters = await readPeftAdapter(dir, model);
  model.adapters?.dispose();
  model.adapters = adapters;
  return adapters;
}

/** Reads a PEFT adapter folder for `model` without installing it. Every key and shape is checked against the model. */
export async function readPeftAdapter(dir: string, model: Qwen2Model): Promise<LoraAdapters> {
  const configFile = path.join(dir, ADAPTER_CONFIG_FILE);
  const weightsFile = path.join(dir, ADAPTER_WEIGHTS_FILE);
  let configText: string;
  try {
    configText = await fs.readFile(configFile, 'utf8');
  } catch (err) {
    throw new Error(`adapter ${dir}: cannot read ${configFile}: ${(err as Error).message}`);
  }
  let configJson: unknown;
  try {
    configJson = JSON.parse(configText);
  } catch (err) {
    throw new Error(`${configFile} is not valid JSON: ${(err as Error).message}`);
  }
  const header = await readSafetensorsHeader(weightsFile);
  return peftAdapterFrom(configJson, configFile, header, weightsFile, (entry) => readTensorData(weightsFile, entry), model);
}

/**
 * Rank-1 adapters from a PEFT adapter_config.json (parsed) and the header of adapter_model.safetensors, reading
 * each tensor through `read` (from a file, or from bytes in a browser); `configFile` and `weightsFile` name the
 * sources in errors.
 */
export async function peftAdapterFrom(
  configJson: unknown, configFile: string, header: SafetensorsHeader, weightsFile: string,
  read: (entry: SafetensorsEntry) => HostData | Promise<HostData>, model: Qwen2Model,
): Promise<LoraAdapters> {
  const settings = settingsFromPeftConfig(configJson, configFile);
  const { dims } = model;
  const sizes = projectionDims(dims.hidden, dims.intermediate, dims.heads, dims.kvHeads, dims.headDim);
  const found = new Map<string, { A?: string; B?: string }>();
  for (const name of header.tensors.keys()) {
    const match = PEFT_KEY_PATTERN.exec(name);
    if (!match) throw new Error(`${weightsFile}: tensor "${name}" is not a rank-1 LoRA weight of a Qwen2 projection`);
    const [, module, matrix] = match as unknown as [string, string, 'A' | 'B'];
    const adapter = parseAdapterHookName(module);
    if (!adapter) throw new Error(`${weightsFile}: tensor "${name}": ${module} is not a Qwen2 projection (model.layers.{l}.self_attn.{q,k,v,o}_proj or model.layers.{l}.mlp.{gate,up,down}_proj)`);
    const { layer, projection } = adapter;
    if (layer >= dims.layers) throw new Error(`${weightsFile}: tensor "${name}": layer ${layer} but the model has ${dims.layers} layers`);
    if (!isTargeted(settings, layer, projection)) {
      throw new Error(`${weightsFile}: tensor "${name}": ${projection} is not in target_modules of ${configFile}`);
    }
    const key = adapterHookName(layer, projection);
    const entry = found.get(key) ?? {};
    entry[matrix] = name;
    found.set(key, entry);
  }
  const adapters = new Map<string, RankOneAdapter>();
  try {
    for (let layer = 0; layer < dims.layers; layer++) {
      // Paper order within a layer (gate, up, down, q, k, v, o), whatever order the file lists them in.
      for (const projection of PROJECTIONS.filter((p) => isTargeted(settings, layer, p))) {
        const key = adapterHookName(layer, projection);
        const names = found.get(key);
        if (!names?.A || !names.B) {
          throw new Error(`${weightsFile}: ${key} is in target_modules but its lora_${names?.A ? 'B' : 'A'} weight is missing`);
        }
        const { inFeatures, outFeatures } = sizes[projection];
        const load = async (name: string, expected: number[]): Promise<Tensor> => {
          const entry = header.tensors.get(name)!;
          if (entry.shape.join() !== expected.join()) {
            throw new Error(`${weightsFile}: tensor "${name}" has shape [${entry.shape.join(', ')}], expected [${expected.join(', ')}] (rank 1)`);
          }
          const data = await read(entry);
          const raw = Tensor.fromStorage(model.backend, model.backend.upload(data, entry.dtype === 'F32' ? 'f32' : entry.dtype === 'F16' ? 'f16' : entry.dtype === 'BF16' ? 'bf16' : 'i32'), entry.shape);
          if (raw.dtype === 'i32') throw new Error(`${weightsFile}: tensor "${name}" is integer`);
          const asF32 = raw.dtype === 'f32' ? raw : cast(raw, 'f32');
          if (asF32 !== raw) raw.dispose();
          const flat = reshape(asF32, [-1]);
          if (flat !== asF32) asF32.dispose();
          return keep(requireGrad(flat));
        };
        const a = await load(names.A, [1, inFeatures]);
        const b = await load(names.B, [outFeatures, 1]);
        a.name = `${key}.lora_A`;
        b.name = `${key}.lora_B`;
        adapters.set(key, { a, b });
      }
    }
  } catch (err) {
    for (const { a, b } of adapters.values()) {
      a.dispose();
      b.dispose();
    }
    throw err;
  }
  return new LoraAdapters(settings, adapters);
}

/** The adapter_config.json Python PEFT writes for these settings, so PEFT's from_pretrained accepts it. */
export function peftConfigJson(settings: LoraSettings): Record<string, unknown> {
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: settings.baseModelNameOrPath || null,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: settings.loraAlpha,
    lora_dropout: settings.loraDropout,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: settings.r,
    rank_pattern: {},
    revision: null,
    target_modules: [...(settings.peftTargetModules ?? settings.targetModules)],
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: settings.useRslora,
  };
}

/** Writes a PEFT adapter folder (atomically, file by file): adapter_config.json + adapter_model.safetensors (f32). */
export async function savePeftAdapter(dir: string, adapters: LoraAdapters): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  const tensors: TensorToWrite[] = [];
  for (const [key, { a, b }] of adapters.adapters) {
    const adapter = parseAdapterHookName(key);
    if (!adapter) throw new Error(`savePeftAdapter: unexpected adapter key ${key}`);
    const { layer, projection } = adapter;
    tensors.push({ name: peftKey(layer, projection, 'A'), dtype: 'F32', shape: [1, a.size], data: () => a.toFloat32Array() });
    tensors.push({ name: peftKey(layer, projection, 'B'), dtype: 'F32', shape: [b.size, 1], data: () => b.toFloat32Array() });
  }
  await writeSafetensors(path.join(dir, ADAPTER_WEIGHTS_FILE), tensors, { format: 'pt' });
  const configText = `${JSON.stringify(peftConfigJson(adapters.settings), null, 2)}\n`;
  await writeFileAtomic(path.join(dir, ADAPTER_CONFIG_FILE), async (handle) => {
    await handle.writeFile(configText, 'utf8');
  });
}
