// On a machine with real GPUs (bench/gpu.sh's first part): which GPUs sysfs lists, whether Mesa's Vulkan
// device-select layer is there to choose among them, and the adapter a device opened on each one reports.
// Run with MESA_VK_DEVICE_SELECT_DEBUG=1 to see, on stderr, which device the layer matched for each address.
//   npx tsx bench/gpu-select.ts [--out FILE.json]
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { deviceSelectUnavailable, describeGpu, listPciGpus } from '../src/kernels/webgpu/gpu-select.ts';
import { probeWebGpu } from '../src/kernels/webgpu/index.ts';

const { values: { out } } = parseArgs({ options: { out: { type: 'string' } } });
const gpus = listPciGpus();
const unavailable = deviceSelectUnavailable();
console.log(`GPUs under /sys/bus/pci/devices: ${gpus.length ? gpus.map(describeGpu).join(', ') : 'none'}`);
console.log(`device-select layer: ${unavailable ?? 'installed'}`);
const opened: { address: string; adapter: string }[] = [];
for (const gpu of unavailable ? [] : gpus) {
  const probe = await probeWebGpu({ gpu: gpu.address });
  const adapter = 'backend' in probe ? probe.backend.description : `unavailable: ${probe.reason}`;
  console.log(`${gpu.address}: ${adapter}`);
  opened.push({ address: gpu.address, adapter });
  if ('backend' in probe) probe.backend.destroy();
}
if (out) fs.writeFileSync(out, `${JSON.stringify({ gpus: gpus.map(describeGpu), deviceSelect: unavailable ?? 'installed', opened }, null, 2)}\n`);
process.exit(unavailable && gpus.length > 0 ? 1 : 0);
