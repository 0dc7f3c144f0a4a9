#!/usr/bin/env python3
"""Held-out loss of a Qwen2 folder (optionally with a rank-1 PEFT adapter) by the independent PyTorch
implementation in make_qwen2_fixtures.py: the outside check that `rank1 train` lowers held-out loss.

    /usr/bin/python3 scripts/heldout_loss.py MODEL_DIR DATA.jsonl [ADAPTER_DIR ...]

DATA.jsonl holds pre-tokenized rows {"input_ids": [...], "loss_mask": [...]} (mask[t] = 1: token t is a
scored target). Prints the mean cross-entropy per scored token for the base model and for each adapter.
Needs Debian's python3-torch; the test suite never runs this.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_qwen2_fixtures as ref  # noqa: E402


def load_model(folder):
    with open(os.path.join(folder, 'config.json')) as f:
        config = json.load(f)
    weights = {}
    index = os.path.join(folder, 'model.safetensors.index.json')
    files = sorted(set(json.load(open(index))['weight_map'].values())) if os.path.exists(index) else ['model.safetensors']
    for name in files:
        weights.update(ref.read_safetensors(os.path.join(folder, name)))
    return config, {k: v.double() for k, v in weights.items()}


def load_adapter(folder):
    with open(os.path.join(folder, 'adapter_config.json')) as f:
        cfg = json.load(f)
    assert cfg['r'] == 1 and cfg['use_rslora'] and cfg['lora_alpha'] == 16, 'the reference uses rsLoRA alpha 16, r 1'
    tensors = ref.read_safetensors(os.path.join(folder, 'adapter_model.safetensors'))
    adapters = {}
    for name, t in tensors.items():
        path = name[len('base_model.model.'):].rsplit('.lora_', 1)[0]
        a, b = adapters.get(path, (None, None))
        if '.lora_A.' in name:
            a = t.double()
        else:
            b = t.double()
        adapters[path] = (a, b)
    return adapters


def heldout_loss(config, weights, rows, adapters=None):
    total, count = 0.0, 0
    for row in rows:
        ids = torch.tensor([row['input_ids']])
        mask = torch.tensor(row['loss_mask'][1:], dtype=torch.float64)
        logits = ref.forward(config, weights, ids, adapters)[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction='none')
        total += float((nll * mask).sum())
        count += int(mask.sum())
    return total / max(count, 1)


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    model_dir, data = sys.argv[1], sys.argv[2]
    rows = [json.loads(line) for line in open(data) if line.strip()]
    config, weights = load_model(model_dir)
    print(f'base: {heldout_loss(config, weights, rows):.6f}')
    for adapter_dir in sys.argv[3:]:
        print(f'{adapter_dir}: {heldout_loss(config, weights, rows, load_adapter(adapter_dir)):.6f}')


if __name__ == '__main__':
    main()
