// rank1's command line. Each command lives in its own module; this file only parses arguments.
import { Command, InvalidArgumentError, Option } from 'commander';
import { initBackend } from '../tensor/engine.ts';
import { runDemo } from './demo.ts';

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
  .description('train rank-1 adapters on a small frozen bf16 network to recover a hidden rank-1 change')
  .addOption(backendOption())
  .option('--steps <n>', 'optimizer steps', positiveInt, 300)
  .option('--seed <n>', 'random seed', positiveInt, 42)
  .action(async (options: { backend: 'auto' | 'cpu' | 'webgpu'; steps: number; seed: number }) => {
    const choice = await initBackend(options.backend);
    console.log(`backend: ${choice.reason}`);
    await runDemo({ backend: choice.backend, steps: options.steps, seed: options.seed, log: (line) => console.log(line) });
  });

program
  .command('backend')
  .description('say which compute backend would be used, and why')
  .addOption(backendOption())
  .action(async (options: { backend: 'auto' | 'cpu' | 'webgpu' }) => {
    const choice = await initBackend(options.backend);
    console.log(choice.reason);
  });

try {
  await program.parseAsync(process.argv);
  process.exit(0); // Dawn and the matmul worker threads must not keep the process alive
} catch (error) {
  console.error(`rank1: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
