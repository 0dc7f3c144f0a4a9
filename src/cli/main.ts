// rank1's command line. Each command lives in its own module; this file only parses arguments.
import { Command, InvalidArgumentError, Option } from 'commander';
import { initBackend } from '../tensor/engine.ts';
import { demoCommand } from './demo.ts';
import { evalCommand } from './eval-command.ts';
import { gradeCommand } from './grade-command.ts';
import { TRAIN_DEFAULTS, trainCommand } from './train-command.ts';
import { PRETRAIN_DEFAULTS, pretrainCommand } from './pretrain-command.ts';
import { worldMakeCommand, worldProbeCommand } from './world-command.ts';
import { WORLD_DEFAULTS } from '../world/make.ts';
import { generateCommand, hooksCommand, infoCommand, logitsCommand, tokenizeCommand } from './model-commands.ts';
import { HOOK_KINDS } from '../model/hooks.ts';
import { INTERP_DEFAULTS, ablateCommand, extractCommand, topkCommand } from './interp-commands.ts';
import { storeMergeCommand } from './store-command.ts';
import { SAE_DEFAULTS, saeExportCommand, saeFeaturesCommand, saeTrainCommand } from './sae-commands.ts';
import { serveCommand } from './serve-command.ts';
import { interpretCommand } from './interpret-command.ts';
import { INTERPRET_DEFAULTS } from '../jobs/interpret.ts';
import { dashboardCommand } from './dashboard-command.ts';
import { adapterSelectCommand } from './adapter-command.ts';
import { MODULE_SELECTION_HELP } from '../model/adapter-select.ts';

function portNumber(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError(`expected a port in [0, 65535], got "${value}"`);
  return n;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive integer, got "${value}"`);
  return n;
}

const backendOption = () =>
  new Option('--backend <name>', 'compute backend').choices(['auto', 'cpu', 'webgpu']).default('auto');

const program = new Command()
  .name('rank1')
  .description('Rank-1 LoRA adapters on Qwen2 models: a TypeScript tensor engine with autograd and WebGPU kernels')
  .showHelpAfterError();

program
  .command('demo')
  .description('the paper end to end on the toy world from the shipped base: Table 1, ablations, activation store, top-k, SAE, (autointerp,) report.html')
  .addOption(backendOption())
  .option('--out <dir>', 'output folder (new, empty, or an earlier demo\'s, which is replaced)', 'rank1-demo')
  .option('--quick', 'every step at tiny sizes (CI: the whole path in well under 2 minutes; the numbers mean nothing)')
  .option('--seed <n>', 'seed of the adapter initialisation, data order, ablation draw and SAE (same seed, same numbers)', (v: string) => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) throw new InvalidArgumentError(`expected a non-negative integer, got "${v}"`);
    return n;
  }, 42)
  .option('--endpoint <url>', 'OpenAI-compatible base URL for autointerp, e.g. http://127.0.0.1:8000/v1 (rank1 serve); without it autointerp is skipped')
  .option('--explainer-model <name>', 'model name sent to --endpoint')
  .option('--api-key-env <name>', 'environment variable holding the endpoint\'s API key', 'OPENAI_API_KEY')
  .option('--one-process', 'run the full finetune and its evaluation in this process, after rank 1\'s, not in a second process alongside (the default on the CPU backend with 2+ cores); the same numbers')
  .action(demoCommand);

program
  .command('backend')
  .description('say which compute backend would be used, and why')
  .addOption(backendOption())
  .action(async (options: { backend: 'auto' | 'cpu' | 'webgpu' }) => {
    const choice = await initBackend(options.backend);
    console.log(choice.reason);
  });

program
  .command('info')
  .description('architecture, parameter count, adapters and memory needed for a Hugging Face Qwen2 folder')
  .requiredOption('--model <dir>', 'Hugging Face model folder (config.json + safetensors)')
  .option('--json', 'print JSON')
  .action(infoCommand);

program
  .command('tokenize')
  .description('text to token ids, as JSON {"ids": [...]}')
  .option('--model <dir>', 'model folder holding tokenizer.json')
  .option('--tokenizer <file>', 'a tokenizer.json file')
  .requiredOption('--text <text>', 'text to encode')
  .option('--chat', 'render the text as a user message with the chat template (generation prompt added)')
  .action(tokenizeCommand);

program
  .command('logits')
  .description('logits (and adapter activations A·x) as JSON {"ids", "logits", "acts"}')
  .requiredOption('--model <dir>', 'Hugging Face model folder')
  .option('--adapter <dir>', 'PEFT adapter folder (rank 1)')
  .option('--ids <ids>', 'comma-separated token ids')
  .option('--text <text>', 'text to encode with the model\'s tokenizer')
  .option('--chat', 'render --text with the chat template')
  .option('--ablate <modules>', `zero these adapters' contribution: ${MODULE_SELECTION_HELP}`)
  .addOption(backendOption())
  .action(logitsCommand);

program
  .command('generate')
  .description('generate text with a KV cache, streaming to stdout')
  .requiredOption('--model <dir>', 'Hugging Face model folder')
  .option('--adapter <dir>', 'PEFT adapter folder (rank 1)')
  .requiredOption('--prompt <text>', 'prompt text')
  .option('--chat', 'render the prompt with the chat template')
  .option('--max-tokens <n>', 'token budget', positiveInt, 256)
  .option('--temperature <t>', 'sampling temperature (0: greedy)', Number, 0)
  .option('--top-p <p>', 'nucleus sampling threshold', Number, 1)
  .option('--seed <n>', 'sampling seed', positiveInt, 1)
  .option('--steer <module=value...>', 'add VALUE to an adapter activation at every token (repeatable)')
  .addOption(backendOption())
  .action(generateCommand);

program
  .command('interpret')
  .description('autointerpretation: an LLM explains, classifies and categorises each feature (OpenAI-compatible endpoint)')
  .requiredOption('--features <files...>', 'features.jsonl files (rank1 topk, rank1 sae features)')
  .requiredOption('--out <dir>', 'output folder (explanations.jsonl, categories.json, figures, log, cache)')
  .requiredOption('--endpoint <url>', 'OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (rank1 serve)')
  .requiredOption('--model <name>', 'model name sent to the endpoint')
  .option('--api-key-env <name>', 'environment variable holding the API key', INTERPRET_DEFAULTS.apiKeyEnv)
  .option('--prompts <dir>', 'folder of prompt templates replacing the built-in ones (system|explain|categories|assign|detection|fuzzing.jinja)')
  .option('--concurrency <n>', 'requests in flight at once', positiveInt, INTERPRET_DEFAULTS.concurrency)
  .option('--retries <n>', 'retries on 429 / 5xx / timeouts', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`expected a non-negative integer, got "${v}"`);
    return n;
  }, INTERPRET_DEFAULTS.retries)
  .option('--timeout <seconds>', 'per-request timeout', positiveInt, INTERPRET_DEFAULTS.timeout)
  .option('--show <n>', 'examples shown to the explainer per feature', positiveInt, INTERPRET_DEFAULTS.show)
  .option('--score <methods...>', 'score the explanations: detection and/or fuzzing')
  .option('--score-examples <n>', 'activating (and non-activating) excerpts per scored feature', positiveInt, INTERPRET_DEFAULTS.scoreExamples)
  .option('--excerpt <n>', 'tokens shown either side of the activating token (default: the whole stored context)', positiveInt)
  .option('--category-sample <n>', 'explanations the category step sees (drawn with --seed), so its prompt fits', positiveInt, INTERPRET_DEFAULTS.categorySample)
  .option('--limit <n>', 'only the first N features', positiveInt)
  .option('--temperature <t>', 'sampling temperature sent to the endpoint', Number, INTERPRET_DEFAULTS.temperature)
  .option('--max-tokens <n>', 'answer length limit sent to the endpoint', positiveInt, INTERPRET_DEFAULTS.maxTokens)
  .option('--no-json-schema', 'do not send response_format json_schema (for endpoints without structured outputs)')
  .option('--seed <n>', 'seed for scoring mixes and bootstrap intervals', positiveInt, INTERPRET_DEFAULTS.seed)
  .option('--cache <dir>', 'response cache (default OUT/cache)')
  .action(interpretCommand);

program
  .command('dashboard')
  .description('a static site to browse adapter directions, MLP neurons and SAE latents (opens from file://)')
  .requiredOption('--features <files...>', 'features.jsonl files (rank1 topk, rank1 sae features)')
  .option('--explanations <file>', 'explanations.jsonl from rank1 interpret')
  .option('--ablation <file>', 'ablation.json from rank1 ablate (overview: Figure 1, Table 2)')
  .requiredOption('--out <dir>', 'output folder (new, empty, or a dashboard to replace)')
  .option('--title <text>', 'page title')
  .option('--model <dir>', 'embed this model folder for the playground page (the engine runs in the browser)')
  .option('--adapter <dir>', 'and this PEFT rank-1 adapter')
  .option('--serve', 'also serve it over HTTP (regular files in --out only)')
  .option('--port <n>', 'port for --serve (0: any free port)', portNumber, 8080)
  .option('--host <address>', 'address for --serve (127.0.0.1: this machine only)', '127.0.0.1')
  .action(dashboardCommand);

program
  .command('serve')
  .description('an OpenAI-compatible server (GET /v1/models, POST /v1/chat/completions, POST /v1/completions) on rank1\'s engine')
  .requiredOption('--model <dir>', 'Hugging Face model folder (with tokenizer.json)')
  .option('--adapter <dir>', 'PEFT adapter folder (rank 1)')
  .option('--lora-modules <name=dir...>', 'vLLM\'s flag: serve each PEFT adapter under NAME beside the base (its own name); requests of different adapters decode in the same batch')
  .option('--port <n>', 'TCP port (0: any free port)', portNumber, 8000)
  .option('--host <address>', 'address to listen on (127.0.0.1: this machine only)', '127.0.0.1')
  .option('--name <id>', 'model id clients pass as "model" (default: the folder names)')
  .option('--max-batch <n>', 'sequences decoded together per step', positiveInt, 8)
  .option('--max-queue <n>', 'requests waiting before new ones get 503', positiveInt, 64)
  .option('--max-tokens <n>', 'completion length when a request sets no max_tokens', positiveInt, 512)
  .option('--body-limit <bytes>', 'largest request body (413 above)', positiveInt, 2 ** 20)
  .option('--shutdown-timeout <seconds>', 'after SIGTERM/SIGINT, how long in-flight requests may run before they are ended with an error', (v: string) => positiveNumber(v), 30)
  .option('--log', 'log every request')
  .addOption(backendOption())
  .action(serveCommand);

const positiveNumber = (value: string): number => {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`expected a non-negative number, got "${value}"`);
  return n;
};

program
  .command('train')
  .description('train rank-1 LoRA adapters on all 7 projections of every layer (or --full), the paper\'s defaults')
  .requiredOption('--model <dir>', 'Hugging Face model folder')
  .requiredOption('--data <file>', 'JSONL or Parquet: s1K-1.1 rows, templated text rows, or {input_ids, loss_mask} rows')
  .requiredOption('--out <dir>', 'output folder (a PEFT adapter folder; checkpoints inside)')
  .option('--full', 'train every weight instead (the full-finetune baseline)')
  .option('--epochs <n>', 'epochs', positiveInt, TRAIN_DEFAULTS.epochs)
  .option('--steps <n>', 'stop after this many optimizer steps', positiveInt)
  .option('--batch <n>', 'global batch (examples per optimizer step)', positiveInt, TRAIN_DEFAULTS.batch)
  .option('--micro-batch <n>', 'examples per forward/backward', positiveInt, TRAIN_DEFAULTS.microBatch)
  .option('--lr <x>', 'peak learning rate', positiveNumber, TRAIN_DEFAULTS.lr)
  .option('--weight-decay <x>', 'AdamW weight decay', positiveNumber, TRAIN_DEFAULTS.weightDecay)
  .option('--warmup-ratio <x>', 'share of steps in linear warmup', positiveNumber, TRAIN_DEFAULTS.warmupRatio)
  .option('--max-grad-norm <x>', 'gradient-norm clip', positiveNumber, TRAIN_DEFAULTS.maxGradNorm)
  .option('--seed <n>', 'seed for adapter init and data order', positiveInt, TRAIN_DEFAULTS.seed)
  .option('--block-size <n>', 'truncate examples to this many tokens', positiveInt, TRAIN_DEFAULTS.blockSize)
  .option('--lora-alpha <x>', 'rsLoRA alpha (scale = alpha / sqrt(r), r = 1)', positiveNumber, TRAIN_DEFAULTS.loraAlpha)
  .option('--save-every <n>', 'checkpoint every N steps', positiveInt, TRAIN_DEFAULTS.saveEvery)
  .option('--keep-checkpoints <n>', 'checkpoints to keep (0: all)', Number, TRAIN_DEFAULTS.keepCheckpoints)
  .option('--resume <dir>', 'continue from a checkpoint folder, or the latest one in an output folder')
  .option('--no-gradient-checkpointing', 'keep every layer\'s activations (faster, more memory)')
  .option('--loss-chunk <rows>', 'tokens per chunk of the loss, computed from the hidden states without [T, vocab] logits (default: one chunk\'s logits ≤ 64 MiB, 110 rows at 152 064)', positiveInt)
  .addOption(new Option('--checkpoint-dtype <dtype>', 'dtype the gradient checkpoints (layer inputs) are kept in: bf16 halves them, the backward then recomputes from bf16-rounded inputs (the loss curve unchanged within noise); f32 recomputes exactly').choices(['f32', 'bf16']).default('bf16'))
  .option('--layer-chunk <tokens>', 'tokens per chunk of each layer\'s token-wise work (norms, q/k/v/o and MLP projections, SwiGLU; queries attend in chunks to the keys before them) in the forward and the recompute + backward, so no [T, hidden] or [T, intermediate] activation spans the block (default 1024; 0: whole layers)', (v: string) => (v.trim() === '0' ? 0 : positiveInt(v)))
  .option('--offload-checkpoints', 'keep the gradient checkpoints (each layer\'s input) in host memory between the forward and the backward, so the device holds the weights and one layer (WebGPU, one device)')
  .option('--memory-limit <gib>', 'refuse to start if the estimate exceeds this many GiB', (v: string) => positiveNumber(v) * 2 ** 30)
  .option('--no-progress', 'log a line per step instead of a progress bar')
  .addOption(backendOption())
  .option('--devices <n>', 'WebGPU devices to train on, data-parallel: each holds the weights and runs its share of every step\'s micro-batches; their adapter gradients are summed before AdamW (default: one, or one per --gpus entry)', positiveInt)
  .option('--gpus <list>', 'the GPUs the devices are made on, one per device: indices in PCI bus order (0,1,…, as nvidia-smi numbers them) or PCI addresses (0000:1b:00.0); default the first --devices GPUs. Chosen through Mesa\'s Vulkan device-select layer (mesa-vulkan-drivers)')
  .action(trainCommand);

const world = program
  .command('world')
  .description('the toy reasoning world: a task where working step by step beats answering at once');

const operationRange = (value: string): { min: number; max: number } => {
  const m = /^(\d+)(?:-(\d+))?$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`expected N or MIN-MAX operations, got "${value}"`);
  return { min: Number(m[1]), max: Number(m[2] ?? m[1]) };
};
const nonNegativeInt = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`expected a non-negative integer, got "${value}"`);
  return n;
};

world
  .command('make')
  .description('write the world (pretraining corpus, reasoning rows, held-out problems, tokenizer) deterministically from a seed')
  .requiredOption('--out <dir>', 'output folder')
  .option('--seed <n>', 'random seed (same seed, same bytes)', nonNegativeInt, WORLD_DEFAULTS.seed)
  .option('--operations <range>', 'operations per held-out and reasoning problem (the difficulty knob), N or MIN-MAX',
    operationRange, WORLD_DEFAULTS.operations)
  .option('--pretrain-operations <range>', 'operations per problem in the pretraining corpus', operationRange, WORLD_DEFAULTS.pretrainOperations)
  .option('--textbook-pages <n>', 'plain-text worked solutions in the pretraining corpus', nonNegativeInt, WORLD_DEFAULTS.textbookPages)
  .option('--chats <n>', 'chat conversations answered at once in the pretraining corpus', nonNegativeInt, WORLD_DEFAULTS.chats)
  .option('--reasoning-rows <n>', 's1K-style reasoning rows', positiveInt, WORLD_DEFAULTS.reasoningRows)
  .option('--heldout <n>', 'held-out problems', positiveInt, WORLD_DEFAULTS.heldoutProblems)
  .option('--slip-rate <x>', 'share of traces with a corrected slip', Number, WORLD_DEFAULTS.slipRate)
  .option('--answer-section-share <x>', 'share of chats answered at once in s1\'s answer-section form (version 2)', Number, WORLD_DEFAULTS.answerSectionShare)
  .option('--world-version <n>', '1 and 2 remake earlier bases\' worlds; 3 (default): BPE on s1\'s rendering, pages answer in the answer section\'s words', positiveInt, WORLD_DEFAULTS.version)
  .option('--think-aloud-share <x>', 'share of plain-text pages worked aloud in the traces\' register', Number, WORLD_DEFAULTS.thinkAloudShare)
  .option('--merges <n>', 'BPE merges to learn at most', nonNegativeInt, WORLD_DEFAULTS.merges)
  .action(worldMakeCommand);

world
  .command('probe')
  .description('accuracy of a model on held-out problems answering at once (chat), as a textbook page, and with s1\'s think prompt')
  .requiredOption('--model <dir>', 'model folder (with tokenizer.json)')
  .option('--adapter <dir>', 'PEFT adapter folder (rank 1)')
  .requiredOption('--data <file>', 'held-out JSONL (problem, answer)')
  .option('--limit <n>', 'only the first N problems', positiveInt)
  .option('--batch <n>', 'problems decoded together', positiveInt, 32)
  .option('--max-tokens <n>', 'generation budget per problem', positiveInt, 320)
  .option('--modes <modes...>', 'which of chat, textbook, think', ['chat', 'textbook', 'think'])
  .option('--json', 'print JSON')
  .addOption(backendOption())
  .action(worldProbeCommand);

program
  .command('pretrain')
  .description('train a fresh Qwen2-architecture model from scratch on text rows (full parameters); output is a Hugging Face folder')
  .requiredOption('--data <file>', 'JSONL or Parquet text rows (plain text scored in full, chat-templated rows on the assistant turn)')
  .requiredOption('--out <dir>', 'output model folder (checkpoints inside)')
  .option('--tokenizer <dir>', 'folder with tokenizer.json (+ tokenizer_config.json, chat_template.jinja); default: the data file\'s folder')
  .option('--config <file>', 'a Qwen2 config.json to use instead of the architecture flags')
  .option('--layers <n>', 'decoder layers', positiveInt, PRETRAIN_DEFAULTS.layers)
  .option('--hidden <n>', 'hidden size', positiveInt, PRETRAIN_DEFAULTS.hidden)
  .option('--heads <n>', 'attention heads', positiveInt, PRETRAIN_DEFAULTS.heads)
  .option('--kv-heads <n>', 'key/value heads (GQA)', positiveInt, PRETRAIN_DEFAULTS.kvHeads)
  .option('--intermediate <n>', 'SwiGLU intermediate size', positiveInt, PRETRAIN_DEFAULTS.intermediate)
  .option('--vocab-size <n>', 'embedding rows (default: the tokenizer\'s vocabulary rounded up to 64)', positiveInt)
  .option('--max-positions <n>', 'max_position_embeddings', positiveInt, PRETRAIN_DEFAULTS.maxPositions)
  .option('--rope-theta <x>', 'RoPE base', positiveNumber, PRETRAIN_DEFAULTS.ropeTheta)
  .option('--epochs <n>', 'epochs', positiveInt, PRETRAIN_DEFAULTS.epochs)
  .option('--steps <n>', 'stop after this many optimizer steps', positiveInt)
  .option('--batch <n>', 'global batch (rows per optimizer step)', positiveInt, PRETRAIN_DEFAULTS.batch)
  .option('--micro-batch <n>', 'rows per forward/backward', positiveInt, PRETRAIN_DEFAULTS.microBatch)
  .option('--lr <x>', 'peak learning rate (cosine schedule with warmup)', positiveNumber, PRETRAIN_DEFAULTS.lr)
  .option('--weight-decay <x>', 'AdamW weight decay', positiveNumber, PRETRAIN_DEFAULTS.weightDecay)
  .option('--warmup-ratio <x>', 'share of steps in linear warmup', positiveNumber, PRETRAIN_DEFAULTS.warmupRatio)
  .option('--max-grad-norm <x>', 'gradient-norm clip', positiveNumber, PRETRAIN_DEFAULTS.maxGradNorm)
  .option('--seed <n>', 'seed for the initial weights and data order', positiveInt, PRETRAIN_DEFAULTS.seed)
  .option('--block-size <n>', 'truncate rows to this many tokens', positiveInt, PRETRAIN_DEFAULTS.blockSize)
  .option('--save-every <n>', 'checkpoint every N steps', positiveInt, PRETRAIN_DEFAULTS.saveEvery)
  .option('--keep-checkpoints <n>', 'checkpoints to keep (0: all)', Number, PRETRAIN_DEFAULTS.keepCheckpoints)
  .addOption(new Option('--save-dtype <dtype>', 'dtype of the final weights (checkpoints stay f32)').choices(['bf16', 'f32']).default('bf16'))
  .option('--resume <dir>', 'continue from a checkpoint folder, or the latest one in the output folder')
  .option('--gradient-checkpointing', 'recompute each layer in backward (less memory, slower)', false)
  .option('--loss-chunk <rows>', 'tokens per chunk of the loss, computed from the hidden states without [T, vocab] logits (default: one chunk\'s logits ≤ 64 MiB)', positiveInt)
  .addOption(new Option('--checkpoint-dtype <dtype>', 'dtype the gradient checkpoints (layer inputs) are kept in (with --gradient-checkpointing)').choices(['f32', 'bf16']).default('f32'))
  .option('--memory-limit <gib>', 'refuse to start if the estimate exceeds this many GiB', (v: string) => positiveNumber(v) * 2 ** 30)
  .option('--no-progress', 'log a line per step instead of a progress bar')
  .addOption(backendOption())
  .action(pretrainCommand);

program
  .command('eval')
  .description('evaluate on AIME24, MATH500 or GPQA-Diamond as s1 does (resumable; --ablate removes adapters), or print Table 1 and Table 2 with --compare')
  .option('--model <dir>', 'Hugging Face model folder (with --endpoint: the served model name)')
  .option('--adapter <dir>', 'PEFT adapter folder (rank 1)')
  .option('--tokenizer <path>', 'tokenizer.json or its folder (default: the model folder)')
  .addOption(new Option('--bench <name>', 'benchmark (toy: the toy world\'s held-out problems)').choices(['math500', 'aime24', 'gpqa', 'toy']))
  .option('--data <file>', 'benchmark data: MATH-500, AIME or toy-world JSONL, GPQA-Diamond CSV')
  .option('--out <file>', 'results JSONL; rerun with the same file to resume (default results/<bench>-<time>.jsonl)')
  .option('--max-tokens <n>', 'generation budget per problem (default 32768, at most the model\'s max_position_embeddings)', positiveInt)
  .option('--limit <n>', 'only the first N problems', positiveInt)
  .option('--batch <n>', 'problems decoded together (one batched step for all; each keeps its own KV cache)', positiveInt, 8)
  .option('--endpoint <url>', 'generate on an OpenAI-compatible completions endpoint (base URL ending in /v1: vLLM, rank1 serve …); --model is then the served model name')
  .option('--concurrency <n>', 'with --endpoint: requests in flight at once', positiveInt, 8)
  .option('--api-key-env <name>', 'with --endpoint: environment variable holding the API key', 'OPENAI_API_KEY')
  .option('--request-timeout <seconds>', 'with --endpoint: seconds one request may take before it is retried', positiveInt, 3600)
  .option('--retries <n>', 'with --endpoint: retries of a request on 429, 5xx, timeouts and dropped connections', nonNegativeInt, 6)
  .option('--ablated <label>', 'with --endpoint: the served model is the adapter written by rank1 adapter select --drop LABEL (mlp, attention …); recorded in every row as --ablate would, for Table 2')
  .addOption(backendOption())
  .option('--ablate <modules>', `zero-ablate these adapters of --adapter for the whole generation: ${MODULE_SELECTION_HELP}`)
  .option('--compare <spec...>', 'print Table 1 from results files: [BENCH:]base=FILE,lora=FILE,full=FILE, one per benchmark; add mlp_ablated=FILE,attn_ablated=FILE (runs with --ablate mlp / attention) for Table 2')
  .option('--json', 'with --compare: print the table as JSON')
  .option('--shard <i/n>', 'only shard I of N (counted from 0) of the problems, contiguous by row index; default: the Slurm array task (SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT) or the Kubernetes JOB_COMPLETION_INDEX with --shards')
  .option('--shards <n>', 'the shard count N with JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs), or to check a Slurm array\'s', positiveInt)
  .option('--merge <files...>', 'join the results files of the shards of one run into --out, in problem order')
  .action(evalCommand);

program
  .command('grade')
  .description('re-grade a results file (rows with output and gold; choices for gpqa) with rank1 eval\'s grader, without generating again')
  .requiredOption('--bench <name>', 'math500, aime24 or gpqa')
  .requiredOption('--input <file>', 'results JSONL (any rank1 eval output)')
  .option('--out <file>', 'write the re-graded rows here (default: stdout, with the accuracy on stderr)')
  .action(gradeCommand);

program
  .command('adapter')
  .description('work on PEFT adapter folders')
  .command('select')
  .description('write a PEFT adapter folder without (--drop) or with only (--keep) some adapters: the model rank1 eval --ablate evaluates, loadable by PEFT and vLLM')
  .requiredOption('--adapter <dir>', 'PEFT adapter folder (rank 1)')
  .option('--drop <modules>', `adapters to leave out: ${MODULE_SELECTION_HELP}`)
  .option('--keep <modules>', 'adapters to keep (the rest are left out), in the same form')
  .requiredOption('--out <dir>', 'the new adapter folder')
  .action(adapterSelectCommand);

program
  .command('extract')
  .description('run a model with its rank-1 adapter over a data set and write every adapter activation A·x to an activation store (resumable)')
  .requiredOption('--model <dir>', 'Hugging Face model folder')
  .requiredOption('--adapter <dir>', 'PEFT adapter folder (rank 1)')
  .requiredOption('--data <file>', 'JSONL or Parquet rows of the kinds rank1 train reads')
  .requiredOption('--out <dir>', 'the activation store (a folder); rerun the same command to resume')
  .addOption(new Option('--format <rendering>', 'training: as rank1 train renders rows; paper: the paper\'s extraction text (s1K rows)').choices(['training', 'paper']).default('training'))
  .option('--max-tokens <n>', 'truncate each example to this many tokens', positiveInt, INTERP_DEFAULTS.maxTokens)
  .option('--mlp-neurons <n>', 'also store the first N up_proj neurons of each layer (the MLP baseline)', nonNegativeInt, 0)
  .option('--shard-tokens <n>', 'tokens per shard file', positiveInt, INTERP_DEFAULTS.shardTokens)
  .option('--limit <n>', 'only the first N rows', positiveInt)
  .option('--shard <i/n>', 'only shard I of N (counted from 0) of the rows, contiguous by row index; default: the Slurm array task (SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT) or the Kubernetes JOB_COMPLETION_INDEX with --shards')
  .option('--shards <n>', 'the shard count N with JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs), or to check a Slurm array\'s', positiveInt)
  .option('--no-progress', 'log a line every few seconds instead of a progress bar')
  .addOption(backendOption())
  .action(extractCommand);

program
  .command('store')
  .description('work on activation stores')
  .command('merge')
  .description('join the stores of rank1 extract --shard I/N (one per shard, any order) into one store, in the unsharded order (files hard-linked, or copied across file systems)')
  .argument('<out>', 'the merged store (a new or empty folder)')
  .argument('<shard-dirs...>', 'the shards\' stores')
  .action(storeMergeCommand);

program
  .command('ablate')
  .description('zero-ablation sweeps: KL(full ‖ ablated) and cross-entropy per layer, block, adapter, MLP/attention and all (Figure 1, Table 2)')
  .option('--model <dir>', 'Hugging Face model folder (required unless --merge)')
  .option('--adapter <dir>', 'PEFT adapter folder (rank 1; required unless --merge)')
  .option('--data <file>', 'JSONL or Parquet rows of the kinds rank1 train reads (required unless --merge)')
  .requiredOption('--out <dir>', 'output folder: ablation.json, kl-by-layer.svg, adapter-heatmap.svg, table2.md')
  .addOption(new Option('--format <rendering>', 'training or paper (as for extract)').choices(['training', 'paper']).default('training'))
  .option('--examples <n>', 'sequences drawn (or "all")', INTERP_DEFAULTS.examples)
  .option('--seed <n>', 'seed of the draw', nonNegativeInt, INTERP_DEFAULTS.seed)
  .option('--max-tokens <n>', 'truncate each sequence to this many tokens', positiveInt, INTERP_DEFAULTS.maxTokens)
  .option('--min-tokens <n>', 'skip sequences of at most this many tokens', nonNegativeInt, INTERP_DEFAULTS.minTokens)
  .option('--block <n>', 'layers per block group', positiveInt, INTERP_DEFAULTS.block)
  .option('--shard <i/n>', 'only shard I of N (counted from 0) of the drawn sequences, contiguous in draw order; default: the Slurm array task (SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT) or the Kubernetes JOB_COMPLETION_INDEX with --shards')
  .option('--shards <n>', 'the shard count N with JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs), or to check a Slurm array\'s', positiveInt)
  .option('--merge <dirs...>', 'join the output folders of the shards of one ablation into --out (means recomputed exactly as unsharded)')
  .option('--batch <n>', 'ablated variants per forward (default: fit ~512 MB of activations, at most 16)', positiveInt)
  .option('--loss-chunk <rows>', 'tokens per chunk of the KL and cross-entropy, computed from the hidden states without [T, vocab] logits (default: one chunk\'s logits ≤ 64 MiB, 110 rows at 152 064)', positiveInt)
  .option('--no-progress', 'log a line every few seconds instead of a progress bar')
  .addOption(backendOption())
  .action(ablateCommand);

program
  .command('topk')
  .description('max-activating examples of every adapter direction, both polarities (and the MLP-neuron baseline), from an activation store')
  .requiredOption('--store <dir>', 'activation store written by rank1 extract')
  .requiredOption('--out <dir>', 'output folder: features.jsonl')
  .option('--k <n>', 'examples kept per feature', positiveInt, INTERP_DEFAULTS.k)
  .option('--context <n>', 'tokens of context either side', nonNegativeInt, INTERP_DEFAULTS.context)
  .option('--min-abs <x>', 'count only |a| above this', positiveNumber, INTERP_DEFAULTS.minAbs)
  .option('--model <dir>', 'take the tokenizer from this model folder instead of the store')
  .option('--no-progress', 'no progress bar')
  .action(topkCommand);

const sae = program.command('sae').description('a BatchTopK sparse autoencoder over the whole adapter state (the paper\'s SAE)');

sae
  .command('train')
  .description('train a BatchTopK SAE on an activation store or on a safetensors file with activations [N, d]')
  .option('--store <dir>', 'activation store written by rank1 extract')
  .option('--input <file>', 'a safetensors file with a 2-D "activations" tensor [N, d] (F32, F16 or BF16)')
  .requiredOption('--out <dir>', 'output folder: sae.safetensors, config.json, metrics.json, metrics.jsonl, loss-curve.svg')
  .option('--k <n>', 'active latents per token (k·batch per batch)', positiveInt, SAE_DEFAULTS.k)
  .option('--expansion <n>', 'latents per input', positiveInt, SAE_DEFAULTS.expansion)
  .option('--batch <n>', 'tokens per step', positiveInt, SAE_DEFAULTS.batch)
  .option('--lr <x>', 'Adam learning rate (linear warmup, then constant)', positiveNumber, SAE_DEFAULTS.lr)
  .option('--warmup <n>', 'warmup steps', nonNegativeInt, SAE_DEFAULTS.warmup)
  .option('--epochs <n>', 'passes over the training tokens', positiveInt, SAE_DEFAULTS.epochs)
  .option('--seed <n>', 'seed of the initialisation and the shuffle', nonNegativeInt, SAE_DEFAULTS.seed)
  .option('--dead-after <n>', 'a latent is dead after this many tokens without firing', positiveInt, SAE_DEFAULTS.deadAfter)
  .addOption(new Option('--variant <v>', 'standard (dictionary_learning) or paper (the paper\'s code: no ReLU, no b_dec pre-subtraction, no renormalising)').choices(['standard', 'paper']).default('standard'))
  .addOption(new Option('--inference <mode>', 'per-token threshold or batch top-k (default: threshold; batch for --variant paper)').choices(['threshold', 'batch']))
  .option('--save-every <n>', 'checkpoint every N steps', positiveInt, SAE_DEFAULTS.saveEvery)
  .option('--resume <dir>', 'continue from a checkpoint folder, or the latest one in the output folder')
  .option('--no-progress', 'log a line every few seconds instead of a progress bar')
  .addOption(backendOption())
  .action(saeTrainCommand);

sae
  .command('features')
  .description('max-activating examples of every SAE latent (features.jsonl, as rank1 topk) with its decoder row over the adapters')
  .requiredOption('--sae <dir>', 'folder written by rank1 sae train')
  .requiredOption('--store <dir>', 'activation store (the same model and adapter)')
  .requiredOption('--out <dir>', 'output folder: features.jsonl')
  .option('--k <n>', 'examples kept per latent', positiveInt, INTERP_DEFAULTS.k)
  .option('--context <n>', 'tokens of context either side', nonNegativeInt, INTERP_DEFAULTS.context)
  .addOption(new Option('--inference <mode>', 'threshold or batch (default: the SAE\'s)').choices(['threshold', 'batch']))
  .addOption(backendOption())
  .action(saeFeaturesCommand);

sae
  .command('export')
  .description('write the SAE as a SAELens folder (cfg.json + sae_weights.safetensors, JumpReLU) for Python users')
  .requiredOption('--sae <dir>', 'folder written by rank1 sae train (standard variant)')
  .requiredOption('--out <dir>', 'output folder')
  .action(saeExportCommand);

program
  .command('hooks')
  .description('list every hook point of a model with its shape')
  .requiredOption('--model <dir>', 'Hugging Face model folder')
  .addOption(new Option('--kind <kind>', 'only this kind (adapter: in the paper\'s order, 7·layer + j)').choices(HOOK_KINDS))
  .action(hooksCommand);

// Every command takes --backend (the README says so); those that run no model accept it and ignore it.
const leafCommands = (command: Command): Command[] => command.commands.length ? command.commands.flatMap(leafCommands) : [command];
for (const command of leafCommands(program)) {
  if (!command.options.some((option) => option.long === '--backend')) {
    command.addOption(new Option('--backend <name>', 'compute backend (this command runs no model: accepted, not used)').choices(['auto', 'cpu', 'webgpu']));
  }
}

try {
  await program.parseAsync(process.argv);
  process.exit(0); // Dawn and the matmul worker threads must not keep the process alive
} catch (error) {
  console.error(`rank1: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
