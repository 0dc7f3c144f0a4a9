// Choosing which physical GPU a WebGPU device is made on. Dawn under Node picks an adapter only by name (the
// first one whose name matches), so on a machine with eight identical GPUs every device would land on GPU 0.
// Mesa's Vulkan device-select layer (an implicit layer shipped with mesa-vulkan-drivers, active for every
// Vulkan driver, NVIDIA's included) can do what Dawn cannot: with DRI_PRIME=pci-DDDD_BB_DD_F! it exposes only
// the device at that PCI address. The layer reads the variable each time a Vulkan instance enumerates its
// devices, and every Dawn instance (`create()`) makes its own Vulkan instance, so one process can open one
// device per GPU by setting the variable around each device's creation.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A display controller on the PCI bus (what `lspci` lists as VGA compatible or 3D controller). */
export interface PciGpu {
  /** "0000:1b:00.0": domain, bus, device, function. */
  address: string;
  vendorId: number;
  deviceId: number;
}

/** PCI class codes (base class 0x03, display): VGA-compatible controller and 3D controller (H100, A100, MI300). */
const DISPLAY_CLASSES = new Set([0x0300, 0x0302]);
/** Display chips on server boards that drive a console, not compute, and have no Vulkan driver: ASPEED, Matrox. */
const CONSOLE_ONLY_VENDORS = new Set([0x1a03, 0x102b]);

const PCI_ADDRESS = /^(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/i;

/** The machine's GPUs in PCI bus order (the order nvidia-smi numbers them), read from sysfs; none where there is no sysfs. */
export function listPciGpus(root = '/sys/bus/pci/devices'): PciGpu[] {
  let entries: string[];
  try {
    entries = fs.readdirSync(root);
  } catch {
    return [];
  }
  const gpus: PciGpu[] = [];
  for (const address of entries) {
    const read = (file: string): number => Number.parseInt(fs.readFileSync(path.join(root, address, file), 'utf8').trim(), 16);
    try {
      const classCode = read('class') >> 8;
      const vendorId = read('vendor');
      if (DISPLAY_CLASSES.has(classCode) && !CONSOLE_ONLY_VENDORS.has(vendorId)) gpus.push({ address: address.toLowerCase(), vendorId, deviceId: read('device') });
    } catch { /* not a device directory */ }
  }
  return gpus.sort((a, b) => a.address.localeCompare(b.address));
}

/** "0000:1B:00.0" or "1b:00.0" → "0000:1b:00.0" (domain defaulted, lower case, as sysfs names it); null if not an address. */
export function normalizePciAddress(text: string): string | null {
  const m = PCI_ADDRESS.exec(text);
  return m ? `${m[1] ?? '0000'}:${m[2]}:${m[3]}.${m[4]}`.toLowerCase() : null;
}

/** "0000:1b:00.0" (or "1b:00.0") → "pci-0000_1b_00_0", the tag Mesa's device-select layer matches. */
export function deviceSelectTag(address: string): string {
  const normalized = normalizePciAddress(address);
  if (normalized === null) throw new Error(`"${address}" is not a PCI address (expected e.g. 0000:1b:00.0)`);
  return `pci-${normalized.replace(/[:.]/g, '_')}`;
}

/** "0000:1b:00.0 (10de:2330)". */
export function describeGpu(gpu: PciGpu): string {
  const hex = (n: number) => n.toString(16).padStart(4, '0');
  return `${gpu.address} (${hex(gpu.vendorId)}:${hex(gpu.deviceId)})`;
}

/** A `--gpus` list as given (`spec`), the PCI address of each device it names, and those sysfs does not list. */
export interface GpuList {
  spec: string;
  addresses: string[];
  unlisted: string[];
}

/**
 * The PCI addresses a `--gpus` list names, in order: each item an index into `gpus` (0 = the first in bus
 * order) or a PCI address. Where sysfs lists GPUs, an address must be one of them: the layer falls back to its
 * default GPU for an address it does not find, so a typo would put every device on one GPU. Where sysfs lists
 * none (a software driver such as lavapipe, which reports a made-up address; a container without sysfs), an
 * address is handed to the layer as given and reported in `unlisted`; only then may an address be named twice
 * (lavapipe's one device, as the tests do), a listed GPU only once.
 */
export function parseGpuList(spec: string, gpus: readonly PciGpu[]): GpuList {
  const available = gpus.length ? `this machine's GPUs: ${gpus.map((g, i) => `${i} = ${describeGpu(g)}`).join(', ')}` : 'this machine lists no GPU under /sys/bus/pci/devices';
  const fail = (problem: string) => new Error(`--gpus ${spec}: ${problem}`);
  const addresses: string[] = [];
  const unlisted: string[] = [];
  for (const item of spec.split(',').map((s) => s.trim())) {
    if (/^\d+$/.test(item)) {
      const gpu = gpus[Number(item)];
      if (!gpu) throw fail(`there is no GPU ${item} (${available})`);
      addresses.push(gpu.address);
      continue;
    }
    const address = normalizePciAddress(item);
    if (address === null) throw fail(`"${item}" is neither a GPU index nor a PCI address like 0000:1b:00.0 (${available})`);
    if (gpus.length && !gpus.some((g) => g.address === address)) throw fail(`${address} is not one of this machine's GPUs (${available})`);
    if (!gpus.length && !unlisted.includes(address)) unlisted.push(address);
    addresses.push(address);
  }
  const repeated = addresses.find((a, i) => addresses.indexOf(a) !== i);
  if (repeated && !unlisted.includes(repeated)) throw fail(`${repeated} is named twice (each device is a GPU of its own)`);
  return { spec, addresses, unlisted };
}

/** The directories the Vulkan loader reads implicit layers from on Linux (its documented search order). */
export function implicitLayerDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const list = (value: string | undefined, fallback: string) => (value || fallback).split(':').filter(Boolean);
  const home = os.homedir();
  return [
    ...list(env.VK_ADD_IMPLICIT_LAYER_PATH, ''),
    path.join(env.XDG_CONFIG_HOME || path.join(home, '.config'), 'vulkan/implicit_layer.d'),
    ...list(env.XDG_CONFIG_DIRS, '/etc/xdg').map((d) => path.join(d, 'vulkan/implicit_layer.d')),
    '/etc/vulkan/implicit_layer.d',
    path.join(env.XDG_DATA_HOME || path.join(home, '.local/share'), 'vulkan/implicit_layer.d'),
    ...list(env.XDG_DATA_DIRS, '/usr/local/share:/usr/share').map((d) => path.join(d, 'vulkan/implicit_layer.d')),
  ];
}

/**
 * Why a GPU cannot be chosen here, with what to do about it, or null when it can: Mesa's device-select layer
 * missing or switched off, or overridden (the layer reads MESA_VK_DEVICE_SELECT before DRI_PRIME, so a device
 * it names would win over the one each device asks for).
 */
export function deviceSelectUnavailable(dirs: readonly string[] = implicitLayerDirs(), env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.NODEVICE_SELECT) return 'NODEVICE_SELECT is set, which switches Mesa\'s Vulkan device-select layer off: unset it';
  if (env.MESA_VK_DEVICE_SELECT) {
    return `MESA_VK_DEVICE_SELECT is set (to "${env.MESA_VK_DEVICE_SELECT}"), and Mesa's Vulkan device-select layer reads it before ` +
      'the DRI_PRIME each device is made with, so every device would be made on the GPU it names: unset it';
  }
  for (const dir of dirs) {
    let files: string[];
    try {
      files = fs.readdirSync(dir).filter((f) => f.endsWith('.json'));
    } catch {
      continue;
    }
    for (const file of files) {
      try {
        const manifest = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as { layer?: { name?: string } };
        if (manifest.layer?.name === 'VK_LAYER_MESA_device_select') return null;
      } catch { /* not a layer manifest */ }
    }
  }
  return 'Mesa\'s Vulkan device-select layer (VK_LAYER_MESA_device_select, in Debian/Ubuntu\'s mesa-vulkan-drivers) ' +
    'is not installed, and Dawn alone cannot tell identical GPUs apart: install it (it is an implicit layer: nothing else to set)';
}

/** The onGpu calls, one after another: DRI_PRIME is one variable for the whole process. */
let gpuTurns: Promise<unknown> = Promise.resolve();

/**
 * Runs `open` (which must create its Dawn instance and request its adapter inside) with only the GPU at
 * `address` visible to Vulkan; null leaves the choice to the driver (and to the user's own DRI_PRIME). Calls
 * run one at a time, each after the ones before it have finished, so overlapping calls each see their own
 * value; the environment is restored after each. `open` must not call onGpu (it would wait for itself).
 */
export function onGpu<T>(address: string | null, open: () => Promise<T>): Promise<T> {
  const turn = gpuTurns.then(() => withDriPrime(address, open));
  gpuTurns = turn.catch(() => {});
  return turn;
}

async function withDriPrime<T>(address: string | null, open: () => Promise<T>): Promise<T> {
  if (address === null) return open();
  const saved = process.env.DRI_PRIME;
  process.env.DRI_PRIME = `${deviceSelectTag(address)}!`;
  try {
    return await open();
  } finally {
    if (saved === undefined) delete process.env.DRI_PRIME;
    else process.env.DRI_PRIME = saved;
  }
}
