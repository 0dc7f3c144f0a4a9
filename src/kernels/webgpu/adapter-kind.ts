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

const SOFTWARE_NAMES = /llvmpipe|lavapipe|swiftshader|warp|software/i;

/** The software rasterizer an adapter is ("llvmpipe", "SwiftShader", …), or null for a real GPU. */
export function softwareRasterizerName(info: AdapterIdentity): string | null {
  const text = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ');
  const match = SOFTWARE_NAMES.exec(text);
  if (match) return match[0];
  if (info.isFallbackAdapter) return 'a fallback adapter';
  return null;
}
