// `--backend auto`: a software rasterizer is passed over for the CPU backend (and it says so); Dawn's native
// driver chatter never reaches the terminal.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { softwareRasterizerName } from '../src/kernels/webgpu/adapter-kind.ts';
import { initBackend } from '../src/tensor/engine.ts';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '..');

describe('software rasterizers', () => {
  it('are recognised from the adapter info Dawn and browsers give', () => {
    // Dawn on Mesa lavapipe (Vulkan) and llvmpipe (GLES); Chromium's SwiftShader; a fallback-flagged adapter.
    expect(softwareRasterizerName({ vendor: 'mesa', architecture: '', device: 'llvmpipe (LLVM 15.0.6, 256 bits)', description: 'Mesa 25.0.7 (LLVM 15.0.6)' })).toBe('llvmpipe');
    expect(softwareRasterizerName({ vendor: 'mesa', device: 'lavapipe', description: '' })).toBe('lavapipe');
    expect(softwareRasterizerName({ vendor: 'google', architecture: 'swiftshader', device: 'SwiftShader Device (Subzero)', description: '' })).toBe('swiftshader');
    expect(softwareRasterizerName({ vendor: 'microsoft', device: 'Microsoft Basic Render Driver', description: 'WARP' })).toBe('WARP');
    expect(softwareRasterizerName({ vendor: '', architecture: '', device: '', description: '', isFallbackAdapter: true })).toBe('a fallback adapter');
  });

  it('real GPUs are not', () => {
    expect(softwareRasterizerName({ vendor: 'nvidia', architecture: 'hopper', device: 'NVIDIA H200', description: 'NVIDIA: 570.124.06' })).toBeNull();
    expect(softwareRasterizerName({ vendor: 'apple', architecture: 'metal-3', device: 'Apple M3 Pro', description: '' })).toBeNull();
    expect(softwareRasterizerName({ vendor: 'amd', architecture: 'rdna-3', device: 'AMD Radeon RX 7900 XTX (RADV NAVI31)', description: 'radv Mesa 25.0.7' })).toBeNull();
    expect(softwareRasterizerName({ vendor: 'intel', architecture: 'gen-12lp', device: 'Intel(R) Iris(R) Xe Graphics', description: '', isFallbackAdapter: false })).toBeNull();
  });

  it('auto picks the CPU on this machine (no GPU) and says why', async () => {
    const choice = await initBackend('auto');
    expect(choice.backend.name).toBe('cpu');
    expect(choice.reason).toMatch(/the only WebGPU adapter is a software rasterizer \(webgpu \(.+\)\), slower than the CPU backend; --backend webgpu uses it anyway|webgpu unavailable/);
  });
});

describe('Dawn\'s native warnings', () => {
  // Standard error as a terminal or a shell redirection has it (a file or a pipe, which can be reopened);
  // execFile's own stdio are sockets, which cannot, so the command runs under sh with 2> FILE.
  it('never reach standard error, with auto or with webgpu asked for', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-dawn-'));
    for (const [i, args] of [['backend'], ['backend', '--backend', 'webgpu']].entries()) {
      const errFile = path.join(dir, `stderr-${i}.txt`);
      const command = `"${process.execPath}" "${path.join(root, 'bin/rank1.js')}" ${args.join(' ')} 2> "${errFile}"`;
      const result = await run('sh', ['-c', command], { cwd: root }).catch((error: { stdout: string }) => error);
      const errors = await fs.readFile(errFile, 'utf8');
      expect(`${result.stdout}${errors}`).toMatch(/using (cpu|webgpu)|unavailable/);
      expect(errors, args.join(' ')).not.toMatch(/artificially reduced|Couldn't load Vulkan|Warning:|third_party\/dawn/);
    }
  });

  it('a genuine error after an adapter search still reaches standard error', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-dawn-'));
    const errFile = path.join(dir, 'stderr.txt');
    await run('sh', ['-c', `"${process.execPath}" "${path.join(root, 'bin/rank1.js')}" logits --model /nonexistent --ids 1 --backend webgpu 2> "${errFile}"`], { cwd: root }).catch(() => undefined);
    expect(await fs.readFile(errFile, 'utf8')).toMatch(/rank1: .*nonexistent/);
  });
});
