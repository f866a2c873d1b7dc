/**
 * The vmdk format's entry: registers its driver by descriptor (name, kind,
 * probe); the driver module (vmdk.ts) loads on the first open or create of
 * the format. Code outside src/formats/vmdk/ reaches vmdk only through the
 * driver registry (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerLazyDriver } from '../../block/driver.js';
import { vmdkProbe } from './probe.js';

registerLazyDriver({ name: 'vmdk', kind: 'format', probe: vmdkProbe, load: () => import('./vmdk.js').then((m) => m.vmdkDriver) });
