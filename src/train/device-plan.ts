// Which GPU each device of `rank1 train --devices N [--gpus LIST]` is made on, decided before anything loads:
// the machine's GPUs come from sysfs, and choosing one needs Mesa's Vulkan device-select layer (gpu-select.ts).
import { deviceSelectUnavailable, describeGpu, listPciGpus, type GpuList, type PciGpu } from '../kernels/webgpu/gpu-select.ts';

/** Where each device of a run is made: a PCI address per device (null: the driver's default adapter), and what to tell the user. */
export interface DevicePlan {
  gpus: (string | null)[];
  notes: string[];
}

/** The machine's GPUs and why one cannot be chosen (null: it can). */
export interface Machine {
  gpus: readonly PciGpu[];
  deviceSelectUnavailable: string | null;
}

/**
 * Which GPU each of `devices` devices opens on. `--gpus` (`named`, parsed against the machine's GPUs) names
 * them; without it a run of N devices takes the machine's first N GPUs, and more devices than GPUs are dealt
 * out round-robin (the GPUs are shared: the data-parallel path runs, no faster than one device per GPU).
 * Choosing needs Mesa's device-select layer, since Dawn cannot tell identical GPUs apart (gpu-select.ts); a
 * machine that lists one GPU or none (a software adapter, a container without sysfs) has nothing to choose
 * among and runs every device on the driver's default adapter, as one device does. `machine` is asked only
 * where a GPU is chosen, so a one-device run without --gpus does not look.
 */
export function planDevices(devices: number, named: GpuList | undefined, machine: () => Machine): DevicePlan {
  if (named !== undefined) {
    const { spec, addresses, unlisted } = named;
    if (addresses.length !== devices) throw new Error(`--gpus ${spec} names ${addresses.length} GPU${addresses.length === 1 ? '' : 's'} but --devices is ${devices}`);
    const { gpus: listed, deviceSelectUnavailable: why } = machine();
    if (why) throw new Error(`--gpus ${spec}: a GPU cannot be chosen here: ${why}`);
    return {
      gpus: addresses,
      notes: [
        ...unlisted.map((a) => `--gpus: ${a} is not a GPU listed under /sys/bus/pci/devices; handed to the Vulkan device-select layer as given`),
        devicesNote(addresses, listed),
      ],
    };
  }
  if (devices === 1) return { gpus: [null], notes: [] };
  const { gpus: listed, deviceSelectUnavailable: why } = machine();
  if (listed.length <= 1) {
    const shared = listed.length === 0
      ? `this machine lists no GPU under /sys/bus/pci/devices: the ${devices} devices share the default adapter`
      : `this machine lists one GPU, ${describeGpu(listed[0]!)}: the ${devices} devices share it`;
    return { gpus: Array<null>(devices).fill(null), notes: [`${shared} (the data-parallel path runs, no faster than one device)`] };
  }
  if (why) throw new Error(`--devices ${devices}: this machine has ${listed.length} GPUs, but every device would be made on the same GPU: ${why}`);
  const gpus = Array.from({ length: devices }, (_, i) => listed[i % listed.length]!.address);
  const notes = [devicesNote(gpus, listed)];
  if (devices > listed.length) notes.push(`the ${devices} devices share this machine's ${listed.length} GPUs round-robin (the data-parallel path runs, no faster than --devices ${listed.length})`);
  return { gpus, notes };
}

/** "devices on 0: 0000:1b:00.0 (10de:2330), 1: …": each device's GPU, with its ids where sysfs lists it. */
function devicesNote(addresses: readonly string[], listed: readonly PciGpu[]): string {
  const describe = (address: string) => {
    const gpu = listed.find((g) => g.address === address);
    return gpu ? describeGpu(gpu) : address;
  };
  return `devices on ${addresses.map((a, i) => `${i}: ${describe(a)}`).join(', ')}`;
}

/** The machine's GPUs and whether one can be chosen, for planDevices. */
export function inspectMachine(): Machine {
  return { gpus: listPciGpus(), deviceSelectUnavailable: deviceSelectUnavailable() };
}
