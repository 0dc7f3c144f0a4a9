// rank1's engine in a browser: the same model, ops and kernels as the CLI, fed from bytes instead of files.
// A Hugging Face folder is fetched (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
// chat_template.jinja) and, optionally, a PEFT adapter folder; the model is built with the library's own
// constructors (qwen2FromTensors, peftAdapterFrom). Bundled for the browser by ./bundle.ts, which maps
// Node's built-ins to ./node-shims.ts.
import type { Backend } from '../kernels/backend.ts';
import { createCpuBackend } from '../kernels/cpu/index.ts';
import { buildWebGpuBackend, type WebGpuBackend } from '../kernels/webgpu/index.ts';
import { describeDevice, requestDevice } from '../kernels/webgpu/device.ts';
import { WebGpuRuntime } from '../kernels/webgpu/runtime.ts';
import { Tensor, keep, tidy } from '../tensor/tensor.ts';
import { tensor } from '../tensor/ops.ts';
import { parseQwen2Config, type Qwen2Config } from '../model/config.ts';
import { fromSafetensorsDType, parseSafetensorsBuffer } from '../model/safetensors.ts';
import { peftAdapterFrom, qwen2FromTensors } from '../model/load.ts';
import { QWEN25_INSTRUCT_CHAT_TEMPLATE, encodeChat, type ChatMessage } from '../model/chat-template.ts';
import { Tokenizer } from '../model/tokenizer.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import type { ModelFiles } from './protocol.ts';

export interface FetchedModel {
  model: Qwen2Model;
  config: Qwen2Config;
  tokenizer: Tokenizer;
  chatTemplate: string;
}

async function fetchBytes(url: string): Promise<Uint8Array> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function fetchJson(url: string, optional = false): Promise<unknown> {
  const response = await fetch(url);
  if (!response.ok) {
    if (optional && response.status === 404) return undefined;
    throw new Error(`${url}: HTTP ${response.status}`);
  }
  try {
    return await response.json();
  } catch (error) {
    throw new Error(`${url}: not JSON (${(error as Error).message})`);
  }
}

/** The CPU backend (single-threaded in a page: WASM SIMD matmul, no workers). */
export function cpuBackend(): Backend {
  return createCpuBackend();
}

/**
 * A WebGPU backend on the page's (or worker's) navigator.gpu, or why there is none. Software adapters
 * (SwiftShader) work but are slower than the CPU backend.
 */
export async function webGpuBackend(): Promise<{ backend: WebGpuBackend } | { reason: string }> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) return { reason: 'this browser has no navigator.gpu (WebGPU)' };
  const adapter = await gpu.requestAdapter();
  if (!adapter) return { reason: 'navigator.gpu found no adapter' };
  const acquired = await requestDevice(gpu, adapter, 'browser', 'core');
  return { backend: buildWebGpuBackend(new WebGpuRuntime(acquired), describeDevice(acquired)) };
}

/** A model (and its adapter, if the files hold one) on `backend`, built with the library's constructors. */
export async function modelFromFiles(files: ModelFiles, backend: Backend, name = 'model'): Promise<FetchedModel> {
  const config = parseQwen2Config(files.config, `${name}/config.json`);
  const file = `${name}/model.safetensors`;
  const { header, read } = parseSafetensorsBuffer(files.weights, file);
  const tensors = new Map<string, Tensor>();
  for (const [tensorName, entry] of header.tensors) {
    tensors.set(tensorName, keep(Tensor.fromStorage(backend, backend.adopt(read(entry), fromSafetensorsDType(entry.dtype)), entry.shape)));
  }
  const model = qwen2FromTensors(config, tensors, backend, file);
  const tokenizer = new Tokenizer(files.tokenizer as never, (files.tokenizerConfig ?? {}) as never, {
    config: files.config as never, ...(files.generationConfig ? { generationConfig: files.generationConfig as never } : {}),
  });
  if (files.adapterConfig !== undefined && files.adapterWeights) {
    const weightsFile = `${name}/adapter_model.safetensors`;
    const parsed = parseSafetensorsBuffer(files.adapterWeights, weightsFile);
    model.adapters = await peftAdapterFrom(files.adapterConfig, `${name}/adapter_config.json`, parsed.header, weightsFile, parsed.read, model);
  }
  return { model, config, tokenizer, chatTemplate: files.chatTemplate ?? QWEN25_INSTRUCT_CHAT_TEMPLATE };
}

/** The files of a model folder served at `base` (a URL ending in '/'). */
export async function fetchModelFiles(base: string): Promise<ModelFiles> {
  const templateResponse = await fetch(`${base}chat_template.jinja`);
  return {
    config: await fetchJson(`${base}config.json`),
    weights: await fetchBytes(`${base}model.safetensors`),
    tokenizer: await fetchJson(`${base}tokenizer.json`),
    tokenizerConfig: await fetchJson(`${base}tokenizer_config.json`, true),
    generationConfig: await fetchJson(`${base}generation_config.json`, true),
    ...(templateResponse.ok ? { chatTemplate: await templateResponse.text() } : {}),
  };
}

/** A model folder served at `base` (a URL ending in '/'), on `backend`. */
export async function fetchModel(base: string, backend: Backend): Promise<FetchedModel> {
  return modelFromFiles(await fetchModelFiles(base), backend, base);
}

/** Loads the PEFT adapter folder served at `base` onto `model` (replacing any adapter it had). */
export async function fetchAdapter(base: string, model: Qwen2Model): Promise<void> {
  const configFile = `${base}adapter_config.json`;
  const weightsFile = `${base}adapter_model.safetensors`;
  const { header, read } = parseSafetensorsBuffer(await fetchBytes(weightsFile), weightsFile);
  const adapters = await peftAdapterFrom(await fetchJson(configFile), configFile, header, weightsFile, read, model);
  model.adapters?.dispose();
  model.adapters = adapters;
}

/** Logits [T, V] of one sequence, read back. */
export async function logitsOf(model: Qwen2Model, ids: readonly number[]): Promise<Float32Array> {
  const out = tidy(() => model.forward(tensor(Int32Array.from(ids), [1, ids.length], { backend: model.backend, dtype: 'i32' })));
  try {
    return await out.toFloat32Array();
  } finally {
    out.dispose();
  }
}

/** A chat prompt as ids, with the model's template and a generation prompt (message content read as text). */
export function chatPromptIds(loaded: FetchedModel, messages: readonly ChatMessage[]): number[] {
  return encodeChat(loaded.tokenizer, loaded.chatTemplate, messages, { addGenerationPrompt: true });
}
