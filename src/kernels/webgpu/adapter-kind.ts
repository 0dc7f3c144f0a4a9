// Which WebGPU adapters are CPUs pretending to be GPUs. Mesa's llvmpipe (GLES) and lavapipe (Vulkan),
// Google's SwiftShader and Microsoft's WARP run shaders on the host's cores at a few GFLOP/s: rank1's own CPU
// backend beats them, so `--backend auto` passes them over, and the WebGPU kernels pick CPU-friendly shapes
// when they are asked to run on one anyway.

/** The part of GPUAdapterInfo this looks at (Dawn fills every field; browsers may blank some). */
export interface AdapterIdentity {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  /** WebGPU's own flag for a software fallback adapter (recent Dawn and browsers). */
  isFallbackAdapter?: boolean;
}

// Specific names first: lavapipe reports a vendor or architecture of "software" and a device of "llvmpipe …",
// and the name a user can look up is the specific one.
const SOFTWARE_NAMES = [/llvmpipe|lavapipe|swiftshader|\bwarp\b/i, /software/i];

/** The software rasterizer an adapter is ("llvmpipe", "SwiftShader", …), or null for a real GPU. */
export function softwareRasterizerName(info: AdapterIdentity): string | null {
  const text = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ');
  for (const pattern of SOFTWARE_NAMES) {
    const match = pattern.exec(text);
    if (match) return match[0];
  }
  if (info.isFallbackAdapter) return 'a fallback adapter';
  return null;
}

/** What `--backend auto|webgpu` does with the adapter Dawn found. */
export interface WebGpuVerdict {
  use: 'webgpu' | 'cpu';
  /** The software rasterizer the adapter is (see softwareRasterizerName), or null for a real GPU. */
  software: string | null;
  /** Why, in words, for the CLI: "using cpu (…): the only WebGPU adapter is a software rasterizer (…); …". */
  reason: string;
}

/**
 * The decision, pure so it can be tested without a GPU: a real GPU is used; a software rasterizer is passed
 * over for the CPU backend under 'auto' (it is slower than rank1's CPU kernels) and used when 'webgpu' is
 * asked for. `adapter` and `cpu` are the two backends' descriptions, for the reason.
 */
export function decideWebGpu(
  asked: 'auto' | 'webgpu', info: AdapterIdentity, adapter: string, cpu: string,
): WebGpuVerdict {
  const software = softwareRasterizerName(info);
  if (software === null) return { use: 'webgpu', software, reason: `using ${adapter}` };
  if (asked === 'webgpu') {
    return { use: 'webgpu', software, reason: `using ${adapter} (a software rasterizer, ${software}: asked for webgpu)` };
  }
  return {
    use: 'cpu',
    software,
    reason: `using ${cpu}: the only WebGPU adapter is a software rasterizer (${software}: ${adapter}), `
      + 'slower than the CPU backend; pass --backend webgpu to use it anyway',
  };
}
