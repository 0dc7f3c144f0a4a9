// A Hugging Face `config.json` for Qwen2/Qwen2.5 (Qwen2ForCausalLM), validated, and the tensors a checkpoint
// of that config must hold. Legend: H hidden, I intermediate, V vocab, L layers, nh heads, kv key/value
// heads, hd head dim.

export type TorchDType = 'float32' | 'float16' | 'bfloat16';

export interface Qwen2Config {
  hiddenSize: number; // H
  intermediateSize: number; // I
  numHiddenLayers: number; // L
  numAttentionHeads: number; // nh
  numKeyValueHeads: number; // kv
  headDim: number; // hd = H / nh
  vocabSize: number; // V
  maxPositionEmbeddings: number;
  ropeTheta: number;
  rmsNormEps: number;
  tieWordEmbeddings: boolean;
  torchDtype: TorchDType;
  bosTokenId?: number;
  eosTokenId?: number | number[];
}

export interface ExpectedTensor {
  name: string;
  shape: number[];
}

const TORCH_DTYPES: readonly TorchDType[] = ['float32', 'float16', 'bfloat16'];

/**
 * Validates a parsed `config.json`. Defaults follow transformers' Qwen2Config: num_key_value_heads = heads,
 * rope_theta 10000, rms_norm_eps 1e-6, tie_word_embeddings false, torch_dtype float32 when absent.
 * Features rank1 does not implement (rope_scaling, sliding-window attention, another activation) are
 * refused rather than silently ignored.
 */
export function parseQwen2Config(json: unknown, file: string): Qwen2Config {
  const fail = (field: string, why: string): never => {
    throw new Error(`${file}: ${field} ${why}`);
  };
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new Error(`${file}: config is not a JSON object`);
  }
  const raw = json as Record<string, unknown>;
  const has = (field: string) => raw[field] !== undefined && raw[field] !== null;

  const modelType = raw['model_type'];
  const architectures = raw['architectures'];
  if (has('model_type') && modelType !== 'qwen2') {
    fail('model_type', `is ${JSON.stringify(modelType)}; only "qwen2" (Qwen2ForCausalLM) is supported`);
  }
  if (has('architectures')) {
    if (!Array.isArray(architectures) || !architectures.every((a) => typeof a === 'string')) {
      fail('architectures', 'must be a list of strings');
    }
    if (!(architectures as string[]).includes('Qwen2ForCausalLM') && modelType !== 'qwen2') {
      fail('architectures', `is ${JSON.stringify(architectures)}; expected Qwen2ForCausalLM`);
    }
  }
  if (!has('model_type') && !has('architectures')) fail('model_type', 'is missing (and so is architectures); expected "qwen2"');

  const positiveInt = (field: string, fallback?: number): number => {
    const value = raw[field] ?? fallback;
    if (value === undefined) return fail(field, 'is missing');
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
      return fail(field, `must be a positive integer, got ${JSON.stringify(value)}`);
    }
    return value;
  };
  const positiveNumber = (field: string, fallback: number): number => {
    const value = raw[field] ?? fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      return fail(field, `must be a positive number, got ${JSON.stringify(value)}`);
    }
    return value;
  };

  const hiddenSize = positiveInt('hidden_size');
  const intermediateSize = positiveInt('intermediate_size');
  const numHiddenLayers = positiveInt('num_hidden_layers');
  const numAttentionHeads = positiveInt('num_attention_heads');
  const numKeyValueHeads = positiveInt('num_key_value_heads', numAttentionHeads);
  const vocabSize = positiveInt('vocab_size');
  const maxPositionEmbeddings = positiveInt('max_position_embeddings');
  const ropeTheta = positiveNumber('rope_theta', 10000);
  const rmsNormEps = positiveNumber('rms_norm_eps', 1e-6);

  if (hiddenSize % numAttentionHeads !== 0) {
    fail('num_attention_heads', `(${numAttentionHeads}) must divide hidden_size (${hiddenSize})`);
  }
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    fail('num_key_value_heads', `(${numKeyValueHeads}) must divide num_attention_heads (${numAttentionHeads})`);
  }
  const headDim = hiddenSize / numAttentionHeads;
  if (has('head_dim') && raw['head_dim'] !== headDim) {
    fail('head_dim', `is ${JSON.stringify(raw['head_dim'])} but hidden_size / num_attention_heads is ${headDim}`);
  }
  if (headDim % 2 !== 0) fail('hidden_size', `/ num_attention_heads = ${headDim} must be even for rotary embeddings`);

  const tie = raw['tie_word_embeddings'] ?? false;
  if (typeof tie !== 'boolean') fail('tie_word_embeddings', `must be true or false, got ${JSON.stringify(tie)}`);

  // transformers >= 4.56 writes "dtype"; older versions "torch_dtype".
  const dtypeField = has('torch_dtype') ? 'torch_dtype' : 'dtype';
  const torchDtype = raw[dtypeField] ?? 'float32';
  if (!TORCH_DTYPES.includes(torchDtype as TorchDType)) {
    fail(dtypeField, `is ${JSON.stringify(torchDtype)}; expected one of ${TORCH_DTYPES.join(', ')}`);
  }

  if (has('hidden_act') && raw['hidden_act'] !== 'silu') fail('hidden_act', `is ${JSON.stringify(raw['hidden_act'])}; only "silu" is supported`);
  if (has('rope_scaling')) fail('rope_scaling', 'is set; rope scaling is not supported');
  if (raw['use_sliding_window'] === true) fail('use_sliding_window', 'is true; sliding-window attention is not supported');

  const config: Qwen2Config = {
    hiddenSize, intermediateSize, numHiddenLayers, numAttentionHeads, numKeyValueHeads, headDim, vocabSize,
    maxPositionEmbeddings, ropeTheta, rmsNormEps, tieWordEmbeddings: tie as boolean, torchDtype: torchDtype as TorchDType,
  };
  const tokenId = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  if (has('bos_token_id')) {
    if (!tokenId(raw['bos_token_id'])) fail('bos_token_id', `must be a non-negative integer, got ${JSON.stringify(raw['bos_token_id'])}`);
    config.bosTokenId = raw['bos_token_id'] as number;
  }
  if (has('eos_token_id')) {
    const eos = raw['eos_token_id'];
    if (!(tokenId(eos) || (Array.isArray(eos) && eos.length > 0 && eos.every(tokenId)))) {
      fail('eos_token_id', `must be a non-negative integer or a list of them, got ${JSON.stringify(eos)}`);
    }
    config.eosTokenId = Array.isArray(eos) ? [...(eos as number[])] : (eos as number);
  }
  return config;
}

/** The inverse of parseQwen2Config: a config.json object transformers can load. */
export function qwen2ConfigToJson(config: Qwen2Config): Record<string, unknown> {
  const json: Record<string, unknown> = {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_act: 'silu',
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numHiddenLayers,
    num_attention_heads: config.numAttentionHeads,
    num_key_value_heads: config.numKeyValueHeads,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.maxPositionEmbeddings,
    rope_theta: config.ropeTheta,
    rms_norm_eps: config.rmsNormEps,
    tie_word_embeddings: config.tieWordEmbeddings,
    torch_dtype: config.torchDtype,
    attention_dropout: 0.0,
    use_cache: true,
    use_sliding_window: false,
  };
  if (config.bosTokenId !== undefined) json['bos_token_id'] = config.bosTokenId;
  if (config.eosTokenId !== undefined) json['eos_token_id'] = config.eosTokenId;
  return json;
}

/** Every tensor a Qwen2ForCausalLM checkpoint of `config` holds, in model order, with its shape. */
export function expectedQwen2Tensors(config: Qwen2Config): ExpectedTensor[] {
  const { hiddenSize: H, intermediateSize: I, vocabSize: V, numAttentionHeads: nh, numKeyValueHeads: kv, headDim: hd } = config;
  const out: ExpectedTensor[] = [{ name: 'model.embed_tokens.weight', shape: [V, H] }];
  for (let l = 0; l < config.numHiddenLayers; l++) {
    const p = `model.layers.${l}`;
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [H] },
      { name: `${p}.self_attn.q_proj.weight`, shape: [nh * hd, H] },
      { name: `${p}.self_attn.q_proj.bias`, shape: [nh * hd] },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kv * hd, H] },
      { name: `${p}.self_attn.k_proj.bias`, shape: [kv * hd] },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kv * hd, H] },
      { name: `${p}.self_attn.v_proj.bias`, shape: [kv * hd] },
      { name: `${p}.self_attn.o_proj.weight`, shape: [H, nh * hd] },
      { name: `${p}.post_attention_layernorm.weight`, shape: [H] },
      { name: `${p}.mlp.gate_proj.weight`, shape: [I, H] },
      { name: `${p}.mlp.up_proj.weight`, shape: [I, H] },
      { name: `${p}.mlp.down_proj.weight`, shape: [H, I] },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [H] });
  if (!config.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [V, H] });
  return out;
}
