// Choosing the physical GPU of each WebGPU device (`rank1 train --devices N --gpus LIST`): the machine's GPUs
// read from a sysfs tree (here a made-up one), PCI addresses turned into Mesa's device-select tags, --gpus lists
// parsed with errors that name the item, the layer found (or not) where the Vulkan loader looks, DRI_PRIME set
// only while a device is made (one at a time, however the calls overlap), and the plan for each device count. That the layer really sees the variable when
// Dawn makes a device is checked on lavapipe in train-devices.test.ts.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceSelectTag, deviceSelectUnavailable, implicitLayerDirs, listPciGpus, normalizePciAddress, onGpu, parseGpuList, type PciGpu } from '../src/kernels/webgpu/gpu-select.ts';
import { planDevices, type Machine } from '../src/train/device-plan.ts';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rank1-gpu-select-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A sysfs devices folder holding `devices` ([address, class, vendor, device]). */
function sysfs(name: string, devices: [string, number, number, number][]): string {
  const root = path.join(dir, name);
  for (const [address, classCode, vendor, device] of devices) {
    fs.mkdirSync(path.join(root, address), { recursive: true });
    const hex = (n: number, digits: number) => `0x${n.toString(16).padStart(digits, '0')}\n`;
    fs.writeFileSync(path.join(root, address, 'class'), hex(classCode, 6));
    fs.writeFileSync(path.join(root, address, 'vendor'), hex(vendor, 4));
    fs.writeFileSync(path.join(root, address, 'device'), hex(device, 4));
  }
  return root;
}

const H100 = 0x2330;
const eight = Array.from({ length: 8 }, (_, i) => `0000:${(0x1b + 0x20 * i).toString(16).padStart(2, '0')}:00.0`);

describe('listPciGpus', () => {
  it('keeps VGA and 3D controllers in bus order, and drops the board\'s console chip, bridges and NICs', () => {
    const root = sysfs('machine', [
      ['0000:db:00.0', 0x030200, 0x10de, H100], // 3D controller, listed out of order on purpose
      ['0000:1b:00.0', 0x030200, 0x10de, H100],
      ['0000:03:00.0', 0x030000, 0x1a03, 0x2000], // ASPEED BMC VGA
      ['0000:00:00.0', 0x060000, 0x8086, 0x09a2], // host bridge
      ['0000:4c:00.0', 0x020000, 0x15b3, 0x1021], // network controller
      ['0000:9a:00.0', 0x030000, 0x1002, 0x740f], // an AMD VGA
    ]);
    expect(listPciGpus(root)).toEqual([
      { address: '0000:1b:00.0', vendorId: 0x10de, deviceId: H100 },
      { address: '0000:9a:00.0', vendorId: 0x1002, deviceId: 0x740f },
      { address: '0000:db:00.0', vendorId: 0x10de, deviceId: H100 },
    ]);
  });

  it('lists none where there is no sysfs', () => {
    expect(listPciGpus(path.join(dir, 'nowhere'))).toEqual([]);
  });
});

describe('deviceSelectTag', () => {
  it('writes every PCI address as the layer\'s pci-DDDD_BB_DD_F tag, with the domain defaulted', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xff }), fc.integer({ min: 0, max: 0x1f }), fc.integer({ min: 0, max: 7 }), fc.boolean(),
      (domain, bus, device, fn, upper) => {
        const h = (n: number, d: number) => n.toString(16).padStart(d, '0');
        const address = `${h(domain, 4)}:${h(bus, 2)}:${h(device, 2)}.${fn}`;
        const tag = `pci-${h(domain, 4)}_${h(bus, 2)}_${h(device, 2)}_${fn}`;
        expect(deviceSelectTag(upper ? address.toUpperCase() : address)).toBe(tag);
        if (domain === 0) expect(deviceSelectTag(address.slice(5))).toBe(tag);
      }), { numRuns: 300 });
  });

  it('refuses what is not an address', () => {
    for (const bad of ['1b:00', '0000:1b:00.8', 'pci-0000_1b_00_0', '0000:1g:00.0', '']) {
      expect(() => deviceSelectTag(bad)).toThrow(/is not a PCI address/);
      expect(normalizePciAddress(bad)).toBeNull();
    }
    expect(normalizePciAddress('1B:0a.7')).toBe('0000:1b:0a.7');
  });
});

describe('parseGpuList', () => {
  const gpus: PciGpu[] = eight.map((address) => ({ address, vendorId: 0x10de, deviceId: H100 }));
  it('takes indices in bus order and addresses, in the order given', () => {
    expect(parseGpuList('3,0', gpus)).toEqual({ spec: '3,0', addresses: [eight[3], eight[0]], unlisted: [] });
    expect(parseGpuList(` ${eight[5]!.slice(5)} , 7`, gpus)).toEqual({ spec: ` ${eight[5]!.slice(5)} , 7`, addresses: [eight[5], eight[7]], unlisted: [] });
  });

  it('hands on an address sysfs does not list only where it lists no GPU at all (lavapipe\'s made-up one), named twice if need be', () => {
    expect(parseGpuList('0000:00:00.0', [])).toEqual({ spec: '0000:00:00.0', addresses: ['0000:00:00.0'], unlisted: ['0000:00:00.0'] });
    expect(parseGpuList('00:00.0, 0000:00:00.0,0000:99:00.0', [])).toEqual({ spec: '00:00.0, 0000:00:00.0,0000:99:00.0', addresses: ['0000:00:00.0', '0000:00:00.0', '0000:99:00.0'], unlisted: ['0000:00:00.0', '0000:99:00.0'] });
    // Where GPUs are listed, an unlisted address is a typo: the layer would fall back to its default GPU.
    expect(() => parseGpuList('0000:00:00.0', gpus)).toThrow(/--gpus 0000:00:00\.0: 0000:00:00\.0 is not one of this machine's GPUs \(this machine's GPUs: 0 = 0000:1b:00\.0 \(10de:2330\), 1 = 0000:3b:00\.0 \(10de:2330\), .*7 = 0000:fb:00\.0 \(10de:2330\)\)/);
    expect(() => parseGpuList(`${eight[0]},0000:1c:00.0`, gpus)).toThrow(/--gpus 0000:1b:00\.0,0000:1c:00\.0: 0000:1c:00\.0 is not one of this machine's GPUs/);
  });

  it('names the item at fault and what the machine has', () => {
    expect(() => parseGpuList('0,8', gpus)).toThrow(/--gpus 0,8: there is no GPU 8 \(this machine's GPUs: 0 = 0000:1b:00\.0 \(10de:2330\), 1 = /);
    expect(() => parseGpuList('0,gpu1', gpus)).toThrow(/--gpus 0,gpu1: "gpu1" is neither a GPU index nor a PCI address/);
    expect(() => parseGpuList('1', [])).toThrow(/there is no GPU 1 \(this machine lists no GPU under \/sys\/bus\/pci\/devices\)/);
    expect(() => parseGpuList(`2,${eight[2]}`, gpus)).toThrow(new RegExp(`${eight[2]} is named twice`));
  });
});

describe('deviceSelectUnavailable', () => {
  it('finds Mesa\'s layer by its manifest in any of the loader\'s folders, and says why when it is missing or off', () => {
    const empty = path.join(dir, 'layers-empty');
    const other = path.join(dir, 'layers-other');
    const mesa = path.join(dir, 'layers-mesa');
    for (const d of [empty, other, mesa]) fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(other, 'VkLayer_other.json'), JSON.stringify({ layer: { name: 'VK_LAYER_other' } }));
    fs.writeFileSync(path.join(mesa, 'broken.json'), '{');
    fs.writeFileSync(path.join(mesa, 'VkLayer_MESA_device_select.json'), JSON.stringify({ file_format_version: '1.0.0', layer: { name: 'VK_LAYER_MESA_device_select' } }));
    expect(deviceSelectUnavailable([empty, other, mesa], {})).toBeNull();
    expect(deviceSelectUnavailable([empty, other, path.join(dir, 'missing')], {})).toMatch(/VK_LAYER_MESA_device_select.*is not installed/);
    expect(deviceSelectUnavailable([mesa], { NODEVICE_SELECT: '1' })).toMatch(/NODEVICE_SELECT is set.*: unset it$/);
    expect(deviceSelectUnavailable([empty], {})).toMatch(/is not installed.*: install it/);
  });

  it('refuses while MESA_VK_DEVICE_SELECT is set, which the layer reads before DRI_PRIME', () => {
    const mesa = path.join(dir, 'layers-mesa-only');
    fs.mkdirSync(mesa, { recursive: true });
    fs.writeFileSync(path.join(mesa, 'VkLayer_MESA_device_select.json'), JSON.stringify({ layer: { name: 'VK_LAYER_MESA_device_select' } }));
    const why = deviceSelectUnavailable([mesa], { MESA_VK_DEVICE_SELECT: '10de:2330' });
    expect(why).toMatch(/^MESA_VK_DEVICE_SELECT is set \(to "10de:2330"\).*reads it before the DRI_PRIME.*: unset it$/);
    // Set but empty, the layer ignores it (as it does an unset one).
    expect(deviceSelectUnavailable([mesa], { MESA_VK_DEVICE_SELECT: '' })).toBeNull();
    const machine = { gpus: eight.map((address) => ({ address, vendorId: 0x10de, deviceId: H100 })), deviceSelectUnavailable: why };
    expect(() => planFor(2, '0,1', machine)).toThrow(/--gpus 0,1: a GPU cannot be chosen here: MESA_VK_DEVICE_SELECT is set .*: unset it/);
    expect(() => planFor(2, undefined, machine)).toThrow(/--devices 2: this machine has 8 GPUs, but every device would be made on the same GPU: MESA_VK_DEVICE_SELECT is set .*: unset it$/);
  });

  it('looks where the Vulkan loader looks, the added path first', () => {
    const dirs = implicitLayerDirs({ VK_ADD_IMPLICIT_LAYER_PATH: '/opt/a:/opt/b', XDG_DATA_DIRS: '/x/share' });
    expect(dirs.slice(0, 2)).toEqual(['/opt/a', '/opt/b']);
    expect(dirs).toContain('/etc/vulkan/implicit_layer.d');
    expect(dirs).toContain('/x/share/vulkan/implicit_layer.d');
    expect(implicitLayerDirs({})).toContain('/usr/share/vulkan/implicit_layer.d');
  });
});

describe('onGpu', () => {
  it('sets DRI_PRIME to the device\'s tag only while the device is made, and restores it even when that fails', async () => {
    const before = process.env.DRI_PRIME;
    try {
      process.env.DRI_PRIME = 'user-value';
      expect(await onGpu('0000:1b:00.0', async () => process.env.DRI_PRIME)).toBe('pci-0000_1b_00_0!');
      expect(process.env.DRI_PRIME).toBe('user-value');
      await expect(onGpu('0000:1b:00.0', async () => { throw new Error('no device'); })).rejects.toThrow('no device');
      expect(process.env.DRI_PRIME).toBe('user-value');
      delete process.env.DRI_PRIME;
      expect(await onGpu(null, async () => process.env.DRI_PRIME)).toBeUndefined();
      await onGpu('0000:1b:00.0', async () => {});
      expect('DRI_PRIME' in process.env).toBe(false);
    } finally {
      if (before === undefined) delete process.env.DRI_PRIME;
      else process.env.DRI_PRIME = before;
    }
  });

  it('gives overlapping calls each their own value, also across a failing one, and restores the user\'s after all of them', async () => {
    const before = process.env.DRI_PRIME;
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    try {
      await fc.assert(fc.asyncProperty(
        fc.array(fc.record({ gpu: fc.option(fc.constantFrom(...eight), { nil: null }), ms: fc.integer({ min: 0, max: 3 }), fails: fc.boolean() }), { minLength: 2, maxLength: 5 }),
        async (calls) => {
          process.env.DRI_PRIME = 'user-value';
          // Every call starts at once; each reads the variable before and after waiting, as Dawn does while it enumerates.
          const results = await Promise.allSettled(calls.map(({ gpu, ms, fails }) => onGpu(gpu, async () => {
            const first = process.env.DRI_PRIME;
            await sleep(ms);
            if (fails) throw new Error('no device');
            return [first, process.env.DRI_PRIME];
          })));
          results.forEach((result, i) => {
            const expected = calls[i]!.gpu === null ? 'user-value' : `${deviceSelectTag(calls[i]!.gpu!)}!`;
            if (calls[i]!.fails) expect(result).toEqual({ status: 'rejected', reason: new Error('no device') });
            else expect(result).toEqual({ status: 'fulfilled', value: [expected, expected] });
          });
          expect(process.env.DRI_PRIME).toBe('user-value');
        },
      ), { numRuns: 30 });
    } finally {
      if (before === undefined) delete process.env.DRI_PRIME;
      else process.env.DRI_PRIME = before;
    }
  });
});

/** planDevices as `rank1 train` calls it: the --gpus list parsed against the machine's GPUs first. */
function planFor(devices: number, gpus: string | undefined, machine: Machine) {
  return planDevices(devices, gpus === undefined ? undefined : parseGpuList(gpus, machine.gpus), () => machine);
}

describe('planDevices', () => {
  const machine = (count: number, unavailable: string | null = null) => ({
    gpus: eight.slice(0, count).map((address) => ({ address, vendorId: 0x10de, deviceId: H100 })),
    deviceSelectUnavailable: unavailable,
  });
  it('puts N devices on the first N GPUs, or on the ones --gpus names', () => {
    expect(planFor(4, undefined, machine(8)).gpus).toEqual(eight.slice(0, 4));
    expect(planFor(4, undefined, machine(8)).notes[0]).toMatch(/^devices on 0: 0000:1b:00\.0 \(10de:2330\), 1: 0000:3b/);
    expect(planFor(2, '7,6', machine(8)).gpus).toEqual([eight[7], eight[6]]);
    expect(planFor(1, '5', machine(8)).gpus).toEqual([eight[5]]);
    expect(planFor(1, undefined, machine(8))).toEqual({ gpus: [null], notes: [] });
    expect(planFor(2, '7,6', machine(8)).notes).toEqual(['devices on 0: 0000:fb:00.0 (10de:2330), 1: 0000:db:00.0 (10de:2330)']);
  });

  it('looks at the machine only where a GPU is chosen', () => {
    const unread = () => expect.fail('the machine was inspected');
    expect(planDevices(1, undefined, unread)).toEqual({ gpus: [null], notes: [] });
    let looks = 0;
    planDevices(2, undefined, () => (looks++, machine(8)));
    expect(looks).toBe(1);
  });

  it('shares the default adapter where the machine lists no GPU or one, without the layer, and says so', () => {
    const plan = planFor(3, undefined, machine(0));
    expect(plan.gpus).toEqual([null, null, null]);
    expect(plan.notes[0]).toMatch(/lists no GPU .* the 3 devices share the default adapter/);
    for (const unavailable of [null, 'the layer is missing']) {
      expect(planFor(2, undefined, machine(1, unavailable))).toEqual({
        gpus: [null, null],
        notes: ['this machine lists one GPU, 0000:1b:00.0 (10de:2330): the 2 devices share it (the data-parallel path runs, no faster than one device)'],
      });
    }
  });

  it('deals more devices than GPUs out round-robin, and says the GPUs are shared', () => {
    expect(planFor(4, undefined, machine(2))).toEqual({
      gpus: [eight[0], eight[1], eight[0], eight[1]],
      notes: [
        'devices on 0: 0000:1b:00.0 (10de:2330), 1: 0000:3b:00.0 (10de:2330), 2: 0000:1b:00.0 (10de:2330), 3: 0000:3b:00.0 (10de:2330)',
        'the 4 devices share this machine\'s 2 GPUs round-robin (the data-parallel path runs, no faster than --devices 2)',
      ],
    });
    expect(planFor(5, undefined, machine(3)).gpus).toEqual([eight[0], eight[1], eight[2], eight[0], eight[1]]);
    fc.assert(fc.property(fc.integer({ min: 2, max: 8 }), fc.integer({ min: 2, max: 24 }), (count, devices) => {
      const plan = planFor(devices, undefined, machine(count));
      expect(plan.gpus).toEqual(Array.from({ length: devices }, (_, i) => eight[i % count]));
      expect(plan.notes.some((n) => /share this machine's/.test(n))).toBe(devices > count);
    }), { numRuns: 50 });
    expect(() => planFor(4, undefined, machine(2, 'the layer is missing'))).toThrow(/--devices 4: this machine has 2 GPUs, but every device would be made on the same GPU: the layer is missing/);
  });

  it('refuses a --gpus list of another length, and a choice the layer cannot make', () => {
    expect(() => planFor(3, '0,1', machine(8))).toThrow(/--gpus 0,1 names 2 GPUs but --devices is 3/);
    expect(() => planFor(2, undefined, machine(8, 'the layer is missing'))).toThrow(/--devices 2: this machine has 8 GPUs, but every device would be made on the same GPU: the layer is missing/);
    expect(() => planFor(1, '1', machine(8, 'the layer is missing'))).toThrow(/--gpus 1: a GPU cannot be chosen here: the layer is missing/);
  });

  it('hands an address sysfs does not list to the layer, with a note, only where sysfs lists no GPU (software drivers report made-up ones)', () => {
    const plan = planFor(2, '0000:00:00.0,0000:00:00.0', machine(0));
    expect(plan.gpus).toEqual(['0000:00:00.0', '0000:00:00.0']);
    expect(plan.notes[0]).toMatch(/0000:00:00\.0 is not a GPU listed under \/sys\/bus\/pci\/devices/);
    expect(() => planFor(2, '0000:1b:00.0,0000:1c:00.0', machine(2))).toThrow(/--gpus 0000:1b:00\.0,0000:1c:00\.0: 0000:1c:00\.0 is not one of this machine's GPUs \(this machine's GPUs: 0 = 0000:1b:00\.0 \(10de:2330\), 1 = 0000:3b:00\.0 \(10de:2330\)\)/);
  });
});
