// `rank1 adapter select`: a PEFT adapter folder without (--drop) or with only (--keep) some of its adapters —
// the model `rank1 eval --ablate` evaluates, as a folder any engine that serves PEFT adapters can load.
import { selectAdapterFolder, type SelectMode } from '../model/adapter-select.ts';

export interface AdapterSelectOptions {
  adapter: string;
  drop?: string;
  keep?: string;
  out: string;
}

export async function adapterSelectCommand(options: AdapterSelectOptions): Promise<void> {
  if ((options.drop === undefined) === (options.keep === undefined)) throw new Error('adapter select needs exactly one of --drop and --keep');
  const mode: SelectMode = options.drop !== undefined ? 'drop' : 'keep';
  const result = await selectAdapterFolder(options.adapter, mode, (options.drop ?? options.keep)!, options.out);
  process.stderr.write(`${options.out}: kept ${result.kept.length} of ${result.kept.length + result.dropped.length} adapters; target_modules ${JSON.stringify(result.targetModules)}\n`);
  process.stdout.write(`${JSON.stringify({ out: options.out, kept: result.kept.length, dropped: result.dropped, targetModules: result.targetModules })}\n`);
}
