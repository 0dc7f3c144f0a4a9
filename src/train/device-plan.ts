// Which GPU each device of `rank1 train --devices N [--gpus LIST]` is made on, decided before anything loads:
// the machine's GPUs come from sysfs, and choosing one needs Mesa's Vulkan device-select layer (gpu-select.ts).
import { deviceSelectUnavailable, describeGpu, listPciGpus, parseGpuList, type PciGpu } from '../kernels/webgpu/gpu-select.ts';

/** Where each device of a run is made: a PCI address per device (null: the driver's default adapter), and what to tell the user. */
export interface DevicePlan {
  gpus: (string | null)[];
  notes: string[];
}

/**
 * Which GPU each of `devices` devices opens on. `--gpus` names them (indices in PCI bus order or addresses);
 * without it a run of N devices takes the machine's first N GPUs, and more devices than GPUs are dealt out
 * round-robin (the GPUs are shared: the data-parallel path runs, no faster than one device per GPU). Choosing
 * needs Mesa's device-select layer, since Dawn cannot tell identical GPUs apart (gpu-select.ts); a machine that
 * lists one GPU or none (a software adapter, a container without sysfs) has nothing to choose among and runs
 * every device on the driver's default adapter, as one device does.
 */
export function planDevices(devices: number, gpusFlag: string | undefined, machine: { gpus: readonly PciGpu[]; deviceSelectUnavailable: string | null }): DevicePlan {
  const listed = machine.gpus;
  const why = machine.deviceSelectUnavailable;
  if (gpusFlag !== undefined) {
    const { addresses, unlisted } = parseGpuList(gpusFlag, listed);
    if (addresses.length !== devices) throw new Error(`--gpus ${gpusFlag} names ${addresses.length} GPU${addresses.length === 1 ? '' : 's'} but --devices is ${devices}`);
    if (why) throw new Error(`--gpus ${gpusFlag}: a GPU cannot be chosen here: ${why}`);
    return {
      gpus: addresses,
      notes: [
        ...unlisted.map((a) => `--gpus: ${a} is not a GPU listed under /sys/bus/pci/devices; handed to the Vulkan device-select layer as given`),
        `devices on ${addresses.map((a, i) => `${i}: ${a}`).join(', ')}`,
      ],
    };
  }
  if (devices === 1) return { gpus: [null], notes: [] };
  if (listed.length <= 1) {
    const shared = listed.length === 0
      ? `this machine lists no GPU under /sys/bus/pci/devices: the ${devices} devices share the default adapter`
      : `this machine lists one GPU, ${describeGpu(listed[0]!)}: the ${devices} devices share it`;
    return { gpus: Array<null>(devices).fill(null), notes: [`${shared} (the data-parallel path runs, no faster than one device)`] };
  }
  if (why) throw new Error(`--devices ${devices}: this machine has ${listed.length} GPUs, but every device would be made on the same GPU: ${why}`);
  const gpus = Array.from({ length: devices }, (_, i) => listed[i % listed.length]!);
  const notes = [`devices on ${gpus.map((g, i) => `${i}: ${describeGpu(g)}`).join(', ')}`];
  if (devices > listed.length) notes.push(`the ${devices} devices share this machine's ${listed.length} GPUs round-robin (the data-parallel path runs, no faster than --devices ${listed.length})`);
  return { gpus: gpus.map((g) => g.address), notes };
}

/** The machine's GPUs and whether one can be chosen, for planDevices. */
export function inspectMachine(): { gpus: PciGpu[]; deviceSelectUnavailable: string | null } {
  return { gpus: listPciGpus(), deviceSelectUnavailable: deviceSelectUnavailable() };
}
