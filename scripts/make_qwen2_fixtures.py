#!/usr/bin/python3
"""Tiny random Qwen2 checkpoints, a PEFT rank-1 adapter, and their logits computed with PyTorch.

Writes test/fixtures/qwen2/, read by test/qwen2-parity.test.ts (which never needs torch):
  tiny-f32/          config.json + model.safetensors, f32, untied lm_head, nh 4 / kv 2 (GQA ratio 2)
  tiny-bf16-tied/    config.json + model.safetensors, bf16, tied embeddings, nh 7 / kv 1 (GQA ratio 7)
  tiny-sharded/      tiny-f32's shapes, other weights, in two shards + model.safetensors.index.json
  adapter-tiny-f32/  adapter_config.json + adapter_model.safetensors as PEFT saves them (rsLoRA, r 1,
                     alpha 16, all seven projections, non-zero B), for tiny-f32
  expected.json      per model: ids, logits; for tiny-f32 + adapter also every adapter activation A·x,
                     logits and KL with two adapters zero-ablated; per model a greedy continuation

Run with Debian's python3-torch (1.13):  /usr/bin/python3 scripts/make_qwen2_fixtures.py
Deterministic: every random draw comes from a torch.Generator with a fixed seed, and the files are
written byte for byte the same on every run.

transformers is not used: the reference below implements Hugging Face's modeling_qwen2.py from its
rules, independently of rank1:
  * Qwen2RMSNorm  w * (x * rsqrt(mean(x²) + eps));
  * q/k/v linear with bias, o_proj and the MLP without;
  * RoPE: inv_freq = 1 / θ^(arange(0, hd, 2) / hd) and freqs = position ⊗ inv_freq in float32, as
    Qwen2RotaryEmbedding computes them; emb = cat(freqs, freqs); q' = q·cos + rotate_half(q)·sin with
    rotate_half(x) = cat(-x2, x1);
  * GQA by repeat_interleave of the key/value heads (query head h reads kv head h // (nh / kv));
  * causal softmax(q kᵀ · hd^-0.5) v;
  * MLP down(silu(gate(x)) · up(x)); residuals around attention and MLP; final norm; lm_head or the
    tied embedding;
  * PEFT LoRA on each projection: y = W x + b + scale · B (A·x), scale = lora_alpha / sqrt(r) (rsLoRA).
The stored weights are float32 (or bf16); everything is then computed in float64 from exactly those
values, so the expected numbers are the exact answer for the stored weights, rounded to 7 significant
digits at the end. bf16 weights are widened exactly (bf16 is the top half of an f32).
"""
import json
import math
import os
import struct

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, 'test', 'fixtures', 'qwen2')

PROJECTIONS = ['gate_proj', 'up_proj', 'down_proj', 'q_proj', 'k_proj', 'v_proj', 'o_proj']
ATTENTION = {'q_proj', 'k_proj', 'v_proj', 'o_proj'}
LORA_ALPHA = 16
LORA_R = 1
LORA_SCALE = LORA_ALPHA / math.sqrt(LORA_R)  # rsLoRA
ABLATED = ['model.layers.0.mlp.gate_proj', 'model.layers.1.self_attn.v_proj']
GREEDY_NEW_TOKENS = 10
# Greedy steps whose top two logits are closer than this are rejected (another prompt is drawn), so an
# f32 engine cannot legitimately pick a different token than this float64 reference.
GREEDY_MIN_MARGIN = 1e-2


# ---- configs ----------------------------------------------------------------------------------------

def qwen2_config(hidden, intermediate, layers, heads, kv_heads, vocab, tie, torch_dtype):
    """A config.json as transformers' Qwen2Config.to_json_string writes it (the fields rank1 reads first)."""
    return {
        'architectures': ['Qwen2ForCausalLM'],
        'attention_dropout': 0.0,
        'bos_token_id': 0,
        'eos_token_id': 1,
        'hidden_act': 'silu',
        'hidden_size': hidden,
        'initializer_range': 0.02,
        'intermediate_size': intermediate,
        'max_position_embeddings': 128,
        'max_window_layers': layers,
        'model_type': 'qwen2',
        'num_attention_heads': heads,
        'num_hidden_layers': layers,
        'num_key_value_heads': kv_heads,
        'rms_norm_eps': 1e-6,
        'rope_scaling': None,
        'rope_theta': 10000.0,
        'sliding_window': None,
        'tie_word_embeddings': tie,
        'torch_dtype': torch_dtype,
        'transformers_version': '4.45.2',
        'use_cache': True,
        'use_sliding_window': False,
        'vocab_size': vocab,
    }


TINY = dict(hidden=32, intermediate=48, layers=2, heads=4, kv_heads=2, vocab=64)
TINY_GQA7 = dict(hidden=56, intermediate=64, layers=2, heads=7, kv_heads=1, vocab=64)


def head_dim(config):
    return config['hidden_size'] // config['num_attention_heads']


# ---- weights ----------------------------------------------------------------------------------------

def random_weights(config, seed, dtype):
    """Name -> tensor in the storage dtype. Scales chosen so logits spread over a few units and every
    part of the network (biases, attention pattern, norms) visibly matters."""
    gen = torch.Generator().manual_seed(seed)
    H, I, V = config['hidden_size'], config['intermediate_size'], config['vocab_size']
    nh, kv, hd = config['num_attention_heads'], config['num_key_value_heads'], head_dim(config)

    def normal(*shape, std):
        return (torch.randn(shape, generator=gen, dtype=torch.float32) * std).to(dtype)

    def norm_weight(n):
        return (1 + 0.1 * torch.randn((n,), generator=gen, dtype=torch.float32)).to(dtype)

    w = {'model.embed_tokens.weight': normal(V, H, std=0.5 if not config['tie_word_embeddings'] else 0.3)}
    for l in range(config['num_hidden_layers']):
        p = f'model.layers.{l}'
        w[f'{p}.input_layernorm.weight'] = norm_weight(H)
        w[f'{p}.self_attn.q_proj.weight'] = normal(nh * hd, H, std=0.25)
        w[f'{p}.self_attn.q_proj.bias'] = normal(nh * hd, std=0.3)
        w[f'{p}.self_attn.k_proj.weight'] = normal(kv * hd, H, std=0.25)
        w[f'{p}.self_attn.k_proj.bias'] = normal(kv * hd, std=0.3)
        w[f'{p}.self_attn.v_proj.weight'] = normal(kv * hd, H, std=0.2)
        w[f'{p}.self_attn.v_proj.bias'] = normal(kv * hd, std=0.1)
        w[f'{p}.self_attn.o_proj.weight'] = normal(H, nh * hd, std=0.15)
        w[f'{p}.post_attention_layernorm.weight'] = norm_weight(H)
        w[f'{p}.mlp.gate_proj.weight'] = normal(I, H, std=0.2)
        w[f'{p}.mlp.up_proj.weight'] = normal(I, H, std=0.2)
        w[f'{p}.mlp.down_proj.weight'] = normal(H, I, std=0.15)
    w['model.norm.weight'] = norm_weight(H)
    if not config['tie_word_embeddings']:
        w['lm_head.weight'] = normal(V, H, std=0.2)
    return w


def projection_dims(config):
    H, I = config['hidden_size'], config['intermediate_size']
    nh, kv, hd = config['num_attention_heads'], config['num_key_value_heads'], head_dim(config)
    return {
        'gate_proj': (H, I), 'up_proj': (H, I), 'down_proj': (I, H),
        'q_proj': (H, nh * hd), 'k_proj': (H, kv * hd), 'v_proj': (H, kv * hd), 'o_proj': (nh * hd, H),
    }


def module_path(layer, projection):
    return f'model.layers.{layer}.{"self_attn" if projection in ATTENTION else "mlp"}.{projection}'


def random_adapter(config, seed):
    """Module path -> (A [1, in], B [out, 1]) float32. A as PEFT initialises it (kaiming_uniform with
    a = sqrt 5 on [1, in]: U(±1/sqrt(in))); B non-zero (as after training) so the adapters move logits."""
    gen = torch.Generator().manual_seed(seed)
    adapters = {}
    for l in range(config['num_hidden_layers']):
        for projection in PROJECTIONS:
            fan_in, fan_out = projection_dims(config)[projection]
            bound = 1 / math.sqrt(fan_in)
            a = (torch.rand((1, fan_in), generator=gen, dtype=torch.float32) * 2 - 1) * bound
            b = torch.randn((fan_out, 1), generator=gen, dtype=torch.float32) * 0.02
            adapters[module_path(l, projection)] = (a, b)
    return adapters


def peft_state_dict(adapters):
    state = {}
    for path, (a, b) in adapters.items():
        state[f'base_model.model.{path}.lora_A.weight'] = a
        state[f'base_model.model.{path}.lora_B.weight'] = b
    return state


def peft_adapter_config(base_model_name_or_path):
    """adapter_config.json with the fields PEFT 0.13 writes (LoraConfig.to_dict, sorted keys)."""
    return {
        'alpha_pattern': {},
        'auto_mapping': None,
        'base_model_name_or_path': base_model_name_or_path,
        'bias': 'none',
        'fan_in_fan_out': False,
        'inference_mode': True,
        'init_lora_weights': True,
        'layer_replication': None,
        'layers_pattern': None,
        'layers_to_transform': None,
        'loftq_config': {},
        'lora_alpha': LORA_ALPHA,
        'lora_dropout': 0.0,
        'megatron_config': None,
        'megatron_core': 'megatron.core',
        'modules_to_save': None,
        'peft_type': 'LORA',
        'r': LORA_R,
        'rank_pattern': {},
        'revision': None,
        # PEFT stores the set it matched, so the order is arbitrary; not the paper's order on purpose.
        'target_modules': ['o_proj', 'v_proj', 'down_proj', 'gate_proj', 'q_proj', 'k_proj', 'up_proj'],
        'task_type': 'CAUSAL_LM',
        'use_dora': False,
        'use_rslora': True,
    }


# ---- safetensors ------------------------------------------------------------------------------------

SAFETENSORS_DTYPE = {torch.float32: 'F32', torch.bfloat16: 'BF16'}


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype('<i2').tobytes()
    if t.dtype == torch.float32:
        return t.numpy().astype('<f4').tobytes()
    raise ValueError(f'unsupported dtype {t.dtype}')


def write_safetensors(path, tensors):
    """The safetensors format: u64 LE header length N, N bytes of JSON (padded with spaces to a multiple
    of 8), then the tensors' bytes back to back; tensors sorted by name."""
    header = {'__metadata__': {'format': 'pt'}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        data = tensor_bytes(t)
        header[name] = {'dtype': SAFETENSORS_DTYPE[t.dtype], 'shape': list(t.shape), 'data_offsets': [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(',', ':')).encode('utf-8')
    text += b' ' * (-len(text) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    return offset


def read_safetensors(path):
    """Reads back what write_safetensors wrote (a check of the writer, independent of it)."""
    import numpy as np
    with open(path, 'rb') as f:
        raw = f.read()
    (n,) = struct.unpack('<Q', raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n].decode('utf-8'))
    header.pop('__metadata__', None)
    out = {}
    for name, entry in header.items():
        begin, end = entry['data_offsets']
        chunk = raw[8 + n + begin:8 + n + end]
        if entry['dtype'] == 'F32':
            t = torch.from_numpy(np.frombuffer(chunk, dtype='<f4').copy())
        else:
            t = torch.from_numpy(np.frombuffer(chunk, dtype='<i2').copy()).view(torch.bfloat16)
        out[name] = t.reshape(entry['shape'])
    return out


def write_json(path, obj):
    with open(path, 'w') as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + '\n')


# ---- the reference forward --------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_cos_sin(hd, theta, positions):
    """cos, sin [T, hd] in float64 from Qwen2RotaryEmbedding's float32 angles."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = torch.outer(positions.float(), inv_freq)  # float32, as HF computes it
    emb = torch.cat((freqs, freqs), dim=-1).double()
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def forward(config, weights, ids, adapters=None, ablate=(), record=None):
    """ids [B, T] int64 -> logits [B, T, V] float64.

    weights: name -> float64 tensor. adapters: module path -> (A [1, in], B [out, 1]) float64.
    ablate: module paths whose adapter activation A·x is replaced by 0. record: dict filled with each
    adapter's raw activation A·x [B, T].
    """
    B, T = ids.shape
    H = config['hidden_size']
    nh, kv, hd = config['num_attention_heads'], config['num_key_value_heads'], head_dim(config)
    eps = config['rms_norm_eps']
    w = weights

    def project(x, layer, projection, weight, bias=None):
        y = x @ weight.T
        if bias is not None:
            y = y + bias
        path = module_path(layer, projection)
        if adapters is not None and path in adapters:
            a, b = adapters[path]
            s = (x @ a.T)[..., 0]  # [B, T]: the adapter activation
            if record is not None:
                record[path] = s
            if path in ablate:
                s = torch.zeros_like(s)
            y = y + LORA_SCALE * s[..., None] * b[:, 0]
        return y

    cos, sin = rope_cos_sin(hd, config['rope_theta'], torch.arange(T))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    h = w['model.embed_tokens.weight'][ids]  # [B, T, H]
    for l in range(config['num_hidden_layers']):
        p = f'model.layers.{l}'
        x = rms_norm(h, w[f'{p}.input_layernorm.weight'], eps)
        q = project(x, l, 'q_proj', w[f'{p}.self_attn.q_proj.weight'], w[f'{p}.self_attn.q_proj.bias'])
        k = project(x, l, 'k_proj', w[f'{p}.self_attn.k_proj.weight'], w[f'{p}.self_attn.k_proj.bias'])
        v = project(x, l, 'v_proj', w[f'{p}.self_attn.v_proj.weight'], w[f'{p}.self_attn.v_proj.bias'])
        q = q.view(B, T, nh, hd).transpose(1, 2)  # [B, nh, T, hd]
        k = k.view(B, T, kv, hd).transpose(1, 2)  # [B, kv, T, hd]
        v = v.view(B, T, kv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // kv, dim=1)  # [B, nh, T, hd]
        v = v.repeat_interleave(nh // kv, dim=1)
        scores = (q @ k.transpose(-1, -2)) * hd ** -0.5
        scores = scores.masked_fill(~causal, float('-inf'))
        attended = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, nh * hd)
        h = h + project(attended, l, 'o_proj', w[f'{p}.self_attn.o_proj.weight'])
        x2 = rms_norm(h, w[f'{p}.post_attention_layernorm.weight'], eps)
        gate = project(x2, l, 'gate_proj', w[f'{p}.mlp.gate_proj.weight'])
        up = project(x2, l, 'up_proj', w[f'{p}.mlp.up_proj.weight'])
        h = h + project(torch.nn.functional.silu(gate) * up, l, 'down_proj', w[f'{p}.mlp.down_proj.weight'])
    h = rms_norm(h, w['model.norm.weight'], eps)
    lm_head = w['model.embed_tokens.weight'] if config['tie_word_embeddings'] else w['lm_head.weight']
    return h @ lm_head.T


def kl_mean_over_positions(p_logits, q_logits):
    """KL(softmax p ‖ softmax q) per row, averaged over positions: [B, T, V] x2 -> [B]."""
    lp = torch.log_softmax(p_logits, dim=-1)
    lq = torch.log_softmax(q_logits, dim=-1)
    return (lp.exp() * (lp - lq)).sum(-1).mean(-1)


def greedy(config, weights, prompt, adapters=None):
    """Greedy continuation by full recomputation: new ids [B, n] and the logits that chose each [n, B, V]."""
    ids = prompt
    chosen, step_logits = [], []
    for _ in range(GREEDY_NEW_TOKENS):
        last = forward(config, weights, ids, adapters)[:, -1, :]  # [B, V]
        top2 = last.topk(2, dim=-1).values
        margin = float((top2[:, 0] - top2[:, 1]).min())
        if margin < GREEDY_MIN_MARGIN:
            return None
        nxt = last.argmax(-1)
        chosen.append(nxt)
        step_logits.append(last)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
    return torch.stack(chosen, dim=1), torch.stack(step_logits, dim=0)


# ---- expected values ---------------------------------------------------------------------------------

def num(x):
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f'non-finite expected value {x}')
    return float(f'{x:.7g}')


def floats(t):
    return [num(v) for v in t.reshape(-1).tolist()]


def ints(t):
    return [[int(v) for v in row] for row in t.tolist()]


def id_cases(vocab, gen):
    """[2, 7] (covering the first and last token ids), [3, 1] (one token), [1, 13]."""
    b2t7 = torch.randint(0, vocab, (2, 7), generator=gen)
    b2t7[0, 0], b2t7[1, 3] = 0, vocab - 1
    return [
        ('b2t7', b2t7),
        ('b3t1', torch.randint(0, vocab, (3, 1), generator=gen)),
        ('b1t13', torch.randint(0, vocab, (1, 13), generator=gen)),
    ]


def greedy_case(config, weights, gen, adapters=None):
    """A [2, 5] prompt whose greedy continuation has a clear winner at every step."""
    for _ in range(100):
        prompt = torch.randint(0, config['vocab_size'], (2, 5), generator=gen)
        result = greedy(config, weights, prompt, adapters)
        if result is not None:
            new_ids, step_logits = result
            return {
                'prompt': ints(prompt),
                'newIds': ints(new_ids),
                'stepLogitsShape': list(step_logits.shape),
                'stepLogits': floats(step_logits),
            }
    raise RuntimeError('no prompt with a clear greedy winner at every step')


def as_f64(weights):
    return {name: t.to(torch.float64) for name, t in weights.items()}


def model_entry(folder, config, weights, seed, adapters=None, adapter_folder=None):
    gen = torch.Generator().manual_seed(seed)
    w64 = as_f64(weights)
    a64 = None if adapters is None else {p: (a.double(), b.double()) for p, (a, b) in adapters.items()}
    cases = []
    for name, ids in id_cases(config['vocab_size'], gen):
        record = {}
        logits = forward(config, w64, ids, a64, record=record)
        case = {'name': name, 'ids': ints(ids), 'logitsShape': list(logits.shape), 'logits': floats(logits)}
        if a64 is not None:
            assert len(record) == 7 * config['num_hidden_layers']
            case['activations'] = {path: floats(record[path]) for path in sorted(record)}
            ablated = forward(config, w64, ids, a64, ablate=ABLATED)
            kl = kl_mean_over_positions(logits, ablated)
            assert float(kl.min()) > 1e-4, f'ablation barely changes {folder}: KL {kl.tolist()}'
            case['ablation'] = {'hooks': ABLATED, 'logits': floats(ablated), 'klMeanOverPositions': floats(kl)}
        cases.append(case)
    entry = {'dir': folder, 'config': {k: config[k] for k in sorted(config) if k in CONFIG_SUMMARY}, 'cases': cases}
    if adapter_folder is not None:
        entry['adapter'] = adapter_folder
        entry['loraScale'] = LORA_SCALE
        base = forward(config, w64, torch.tensor(cases[0]['ids']))
        moved = max(abs(a - b) for a, b in zip(floats(base), cases[0]['logits']))
        assert moved > 0.1, f'adapters barely move the logits of {folder} ({moved})'
    entry['greedy'] = greedy_case(config, w64, gen, a64)
    return entry


CONFIG_SUMMARY = {'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads',
                  'num_key_value_heads', 'vocab_size', 'tie_word_embeddings', 'torch_dtype'}


def dump(obj, indent=0):
    """JSON with objects indented and lists of numbers on one line: readable, diffable, small."""
    pad = '  ' * indent
    if isinstance(obj, dict):
        if not obj:
            return '{}'
        items = [f'{pad}  {json.dumps(k)}: {dump(v, indent + 1)}' for k, v in obj.items()]
        return '{\n' + ',\n'.join(items) + f'\n{pad}}}'
    if isinstance(obj, list) and any(isinstance(v, dict) for v in obj):
        return '[\n' + ',\n'.join(f'{pad}  {dump(v, indent + 1)}' for v in obj) + f'\n{pad}]'
    return json.dumps(obj, separators=(',', ':'))


# ---- main ---------------------------------------------------------------------------------------------

def main():
    os.makedirs(OUT_DIR, exist_ok=True)

    def folder(name):
        path = os.path.join(OUT_DIR, name)
        os.makedirs(path, exist_ok=True)
        return path

    def single(name, config, weights):
        path = folder(name)
        write_json(os.path.join(path, 'config.json'), config)
        write_safetensors(os.path.join(path, 'model.safetensors'), weights)
        back = read_safetensors(os.path.join(path, 'model.safetensors'))
        assert back.keys() == weights.keys() and all(torch.equal(back[k], weights[k]) for k in weights)

    f32_config = qwen2_config(**TINY, tie=False, torch_dtype='float32')
    f32_weights = random_weights(f32_config, 1001, torch.float32)
    single('tiny-f32', f32_config, f32_weights)

    bf16_config = qwen2_config(**TINY_GQA7, tie=True, torch_dtype='bfloat16')
    bf16_weights = random_weights(bf16_config, 1002, torch.bfloat16)
    single('tiny-bf16-tied', bf16_config, bf16_weights)

    # Sharded: layer 0 and the embedding in the first shard; layer 1, the final norm and lm_head (first by
    # name) in the second, so a reader must follow the index rather than file order.
    sharded_weights = random_weights(f32_config, 1003, torch.float32)
    sharded_dir = folder('tiny-sharded')
    write_json(os.path.join(sharded_dir, 'config.json'), f32_config)
    shard_names = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']
    first = {k: v for k, v in sharded_weights.items() if k == 'model.embed_tokens.weight' or k.startswith('model.layers.0.')}
    second = {k: v for k, v in sharded_weights.items() if k not in first}
    total = 0
    weight_map = {}
    for shard, part in zip(shard_names, [first, second]):
        total += write_safetensors(os.path.join(sharded_dir, shard), part)
        weight_map.update({k: shard for k in part})
    write_json(os.path.join(sharded_dir, 'model.safetensors.index.json'),
               {'metadata': {'total_size': total}, 'weight_map': weight_map})

    adapters = random_adapter(f32_config, 1004)
    adapter_dir = folder('adapter-tiny-f32')
    write_json(os.path.join(adapter_dir, 'adapter_config.json'), peft_adapter_config('test/fixtures/qwen2/tiny-f32'))
    write_safetensors(os.path.join(adapter_dir, 'adapter_model.safetensors'), peft_state_dict(adapters))

    # bf16 weights are widened exactly to float64; the reference never sees unrounded values.
    expected = {
        'generator': 'scripts/make_qwen2_fixtures.py (PyTorch float64 reference of modeling_qwen2.py + PEFT LoRA)',
        'significantDigits': 7,
        'models': {
            'tiny-f32': model_entry('tiny-f32', f32_config, f32_weights, 2001),
            'tiny-bf16-tied': model_entry('tiny-bf16-tied', bf16_config, bf16_weights, 2002),
            'tiny-sharded': model_entry('tiny-sharded', f32_config, sharded_weights, 2003),
            'tiny-f32+adapter': model_entry('tiny-f32', f32_config, f32_weights, 2004, adapters, 'adapter-tiny-f32'),
        },
    }
    with open(os.path.join(OUT_DIR, 'expected.json'), 'w') as f:
        f.write(dump(expected) + '\n')

    total_bytes = 0
    for dirpath, _, files in sorted(os.walk(OUT_DIR)):
        for name in sorted(files):
            size = os.path.getsize(os.path.join(dirpath, name))
            total_bytes += size
            print(f'{os.path.relpath(os.path.join(dirpath, name), ROOT)}: {size} bytes')
    print(f'total {total_bytes} bytes')
    assert total_bytes < 2_000_000


if __name__ == '__main__':
    main()
