// The shipped toy base (models/toy): it loads, it is the model its card describes (the card's measured
// accuracies on a fixed held-out subset come out again to the problem), and a short rank-1 run on the
// world's reasoning traces lowers held-out loss.
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { loadChatTemplate } from '../src/model/chat-template.ts';
import { openCheckpoint } from '../src/model/checkpoint.ts';
import { loadQwen2Checkpoint } from '../src/model/load.ts';
import { loadTokenizer, type Tokenizer } from '../src/model/tokenizer.ts';
import { parseMathJsonl } from '../src/eval/benchmarks.ts';
import { makeBatch } from '../src/train/data-batch.ts';
import { loadTrainingRows, tokenizeRows } from '../src/train/data.ts';
import { PAPER_TRAINING, meanBatchLoss, train } from '../src/train/trainer.ts';
import { generateWorld, worldOptionsFromManifest, WORLD_FILES, type WorldContents, type WorldManifest } from '../src/world/make.ts';
import { probeBase } from '../src/world/probe.ts';

const root = path.resolve(import.meta.dirname, '..');
const toy = path.join(root, 'models/toy');

interface ModelCard {
  probe: { problems: number; chat: number; textbook: number; think: number };
}

describe('the shipped toy base (models/toy)', () => {
  let tokenizer: Tokenizer;
  let template: string;
  let world: WorldContents;
  let card: ModelCard;
  beforeAll(async () => {
    tokenizer = (await loadTokenizer(toy))!;
    template = await loadChatTemplate(toy);
    const manifest = JSON.parse(await fs.readFile(path.join(toy, WORLD_FILES.world), 'utf8')) as WorldManifest;
    world = generateWorld(worldOptionsFromManifest(manifest));
    card = JSON.parse(await fs.readFile(path.join(toy, 'measured.json'), 'utf8')) as ModelCard;
  });

  it('is a bf16 Hugging Face folder of at most 10 MB with its tokenizer, chat template and generation config', async () => {
    const checkpoint = await openCheckpoint(toy);
    expect(checkpoint.config.torchDtype).toBe('bfloat16');
    expect(checkpoint.config.tieWordEmbeddings).toBe(true);
    expect((await fs.stat(path.join(toy, 'model.safetensors'))).size).toBeLessThanOrEqual(10 * 2 ** 20);
    for (const file of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'README.md']) {
      await expect(fs.stat(path.join(toy, file)), file).resolves.toBeTruthy();
    }
    expect(tokenizer.vocabSize).toBeLessThanOrEqual(checkpoint.config.vocabSize);
  });

  it('measures what its card says on the fixed held-out subset: answering at once, as a textbook page, and under s1\'s think prompt', async () => {
    const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
    try {
      const problems = parseMathJsonl(world.heldout.slice(0, card.probe.problems).map((r) => JSON.stringify(r)).join('\n'), 'held-out', 'toy');
      const results = await probeBase(model, tokenizer, template, problems, { maxTokens: 320, batch: 32 });
      const correct = Object.fromEntries(results.map((r) => [r.mode, r.correct]));
      expect(correct).toEqual({ chat: card.probe.chat, textbook: card.probe.textbook, think: card.probe.think });
      // The world works as designed: the latent skill (worked text) far above the chat habit.
      expect(card.probe.textbook).toBeGreaterThan(2 * card.probe.chat);
    } finally {
      model.dispose();
    }
  });

  it('a short rank-1 run on the reasoning traces lowers held-out loss on unseen traces', async () => {
    const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-toy-lora-'));
    try {
      const rows = await loadTrainingRows(await writeRows(dir, world.reasoning));
      const examples = tokenizeRows(rows, tokenizer, template);
      const heldOut = makeBatch(examples.slice(-16), tokenizer.chatTokens.endOfText!);
      const before = await meanBatchLoss(model, heldOut);
      await train(model, examples.slice(0, 64), {
        ...PAPER_TRAINING, epochs: 2, microBatch: 16, gradientCheckpointing: false, saveEvery: 1000, keepCheckpoints: 1,
        padId: tokenizer.chatTokens.endOfText!,
      }, { outDir: path.join(dir, 'lora'), log: () => {} });
      const after = await meanBatchLoss(model, heldOut);
      expect(after).toBeLessThan(before * 0.8);
    } finally {
      model.dispose();
    }
  });
});

async function writeRows(dir: string, rows: readonly object[]): Promise<string> {
  const file = path.join(dir, 'reasoning.jsonl');
  await fs.writeFile(file, rows.map((r) => `${JSON.stringify(r)}\n`).join(''));
  return file;
}
