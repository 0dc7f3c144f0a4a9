// `--backend auto`: a software rasterizer is passed over for the CPU backend (and it says so); Dawn's native
// driver chatter never reaches the terminal.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { decideWebGpu, softwareRasterizerName, type AdapterIdentity } from '../src/kernels/webgpu/adapter-kind.ts';
import type { WebGpuBackend } from '../src/kernels/webgpu/index.ts';
import { filterDawnChatter } from '../src/kernels/webgpu/device.ts';
import { initBackend } from '../src/tensor/engine.ts';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '..');
const required = process.env['RANK1_REQUIRE_WEBGPU'] === '1';

describe('software rasterizers', () => {
  it('are recognised from the adapter info Dawn and browsers give', () => {
    // Dawn on Mesa lavapipe (Vulkan) and llvmpipe (GLES); Chromium's SwiftShader; a fallback-flagged adapter.
    expect(softwareRasterizerName({ vendor: 'mesa', architecture: '', device: 'llvmpipe (LLVM 15.0.6, 256 bits)', description: 'Mesa 25.0.7 (LLVM 15.0.6)' })).toBe('llvmpipe');
    expect(softwareRasterizerName({ vendor: 'mesa', device: 'lavapipe', description: '' })).toBe('lavapipe');
    // lavapipe through Dawn's Vulkan backend (as CI sees it): "software" in one field, the driver's name in another.
    expect(softwareRasterizerName({ vendor: 'mesa', architecture: 'software', device: 'llvmpipe (LLVM 15.0.6, 256 bits)', description: 'Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6)' })).toBe('llvmpipe');
    expect(softwareRasterizerName({ vendor: 'unknown', architecture: 'software', device: 'CPU renderer', description: '' })).toBe('software');
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
});

describe('the --backend auto decision', () => {
  // Adapter info as Dawn reports it on Mesa lavapipe (Vulkan) and llvmpipe (GLES), Chromium's SwiftShader,
  // and a real GPU (Vulkan on an NVIDIA H200).
  const lavapipe: AdapterIdentity = { vendor: 'mesa', architecture: '', device: 'llvmpipe (LLVM 15.0.6, 256 bits)', description: 'Mesa 25.0.7 (LLVM 15.0.6)', isFallbackAdapter: false };
  const llvmpipeGles: AdapterIdentity = { vendor: 'mesa', architecture: '', device: 'llvmpipe', description: 'OpenGL version OpenGL ES 3.2 Mesa 22.3.6' };
  const swiftShader: AdapterIdentity = { vendor: 'google', architecture: 'swiftshader', device: 'SwiftShader Device (Subzero)', description: 'SwiftShader driver 5.0.0', isFallbackAdapter: true };
  const flaggedOnly: AdapterIdentity = { vendor: '', architecture: '', device: '', description: '', isFallbackAdapter: true };
  const h200: AdapterIdentity = { vendor: 'nvidia', architecture: 'hopper', device: 'NVIDIA H200', description: 'NVIDIA: 570.124.06', isFallbackAdapter: false };
  const cpu = 'cpu (wasm simd, 16 threads)';

  it('auto passes a software rasterizer over for the CPU and says so', () => {
    for (const [info, name] of [[lavapipe, 'llvmpipe'], [llvmpipeGles, 'llvmpipe'], [swiftShader, 'swiftshader'], [flaggedOnly, 'a fallback adapter']] as const) {
      const verdict = decideWebGpu('auto', info, `webgpu (${info.device})`, cpu);
      expect(verdict.use).toBe('cpu');
      expect(verdict.software).toBe(name);
      expect(verdict.reason).toBe(`using ${cpu}: the only WebGPU adapter is a software rasterizer (${name}: webgpu (${info.device})), `
        + 'slower than the CPU backend; pass --backend webgpu to use it anyway');
    }
  });

  it('--backend webgpu still uses a software rasterizer, and says what it is', () => {
    const verdict = decideWebGpu('webgpu', lavapipe, 'webgpu (lavapipe)', cpu);
    expect(verdict).toEqual({ use: 'webgpu', software: 'llvmpipe', reason: 'using webgpu (lavapipe) (a software rasterizer, llvmpipe: asked for webgpu)' });
  });

  it('a real GPU is used either way', () => {
    for (const asked of ['auto', 'webgpu'] as const) {
      expect(decideWebGpu(asked, h200, 'webgpu (NVIDIA H200, vulkan, core)', cpu))
        .toEqual({ use: 'webgpu', software: null, reason: 'using webgpu (NVIDIA H200, vulkan, core)' });
    }
  });

  it('initBackend(\'auto\') on this machine: the CPU over a software adapter, a real GPU if there is one', async (context) => {
    const choice = await initBackend('auto');
    if (choice.backend.name === 'webgpu') {
      // A machine with a real GPU: auto keeps it.
      const info = (choice.backend as WebGpuBackend).runtime.acquired.adapterInfo;
      expect(softwareRasterizerName(info), choice.reason).toBeNull();
      (choice.backend as WebGpuBackend).destroy();
      return;
    }
    expect(choice.backend.name).toBe('cpu');
    if (/webgpu unavailable/.test(choice.reason)) {
      if (required) expect.fail(`RANK1_REQUIRE_WEBGPU=1 but ${choice.reason}`);
      context.skip(`no WebGPU adapter at all: ${choice.reason}`);
    }
    expect(choice.reason).toMatch(/^using cpu \(.*\): the only WebGPU adapter is a software rasterizer \((llvmpipe|lavapipe|swiftshader|a fallback adapter)[^)]*: webgpu \(.+\)\), slower than the CPU backend; pass --backend webgpu to use it anyway$/i);
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

  // What Dawn 0.6 (npm webgpu) prints while it looks for adapters on a machine without libvulkan.
  const chatter = "Warning: Couldn't load Vulkan: libvulkan.so.1: cannot open shared object file: No such file or directory\n"
    + '    at operator() (/home/runner/work/node-webgpu/node-webgpu/third_party/dawn/src/dawn/native/vulkan/BackendVk.cpp:368)\n'
    + '\n'
    + 'Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 90 to 16 to fit dynamic offset allocation limit.\n'
    + 'Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 80 to 16 to fit dynamic offset allocation limit.\n'
    + 'WARNING: lavapipe is not a conformant vulkan implementation, testing use only.\n';

  it('the filter drops the chatter and keeps everything else', () => {
    expect(filterDawnChatter(chatter)).toBe('');
    const error = 'Error: Vulkan device lost\n    at operator() (/x/DeviceVk.cpp:12)\n';
    expect(filterDawnChatter(`${chatter}${error}something else\n`)).toBe(`${error}something else\n`);
    expect(filterDawnChatter(`note: before\n${chatter}`)).toBe('note: before\n');
  });

  it('what native code writes to fd 2 during the search is filtered, not lost', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-dawn-'));
    const script = path.join(dir, 'search.mts');
    await fs.writeFile(script, [
      "import fs from 'node:fs';",
      `import { withNativeStderrFiltered } from ${JSON.stringify(path.join(root, 'src/kernels/webgpu/device.ts'))};`,
      'const value = await withNativeStderrFiltered(async () => {',
      `  fs.writeSync(2, ${JSON.stringify(chatter)});`,
      '  await new Promise((resolve) => setTimeout(resolve, 5));',
      "  fs.writeSync(2, 'Error: a genuine driver error\\n');",
      '  return 42;',
      '});',
      "console.log('value', value);",
      "process.stderr.write('after the search\\n');",
    ].join('\n'));
    const errFile = path.join(dir, 'stderr.txt');
    const tsx = path.join(root, 'node_modules/tsx/dist/cli.mjs');
    const result = await run('sh', ['-c', `"${process.execPath}" "${tsx}" "${script}" 2> "${errFile}"`], { cwd: root, env: { ...process.env, RANK1_DAWN_LOGS: '' } });
    expect(result.stdout).toBe('value 42\n');
    const errors = await fs.readFile(errFile, 'utf8');
    expect(errors).toBe(process.platform === 'linux' ? 'Error: a genuine driver error\nafter the search\n' : `${chatter}Error: a genuine driver error\nafter the search\n`);
  });
});
