/**
 * The vpc format's entry: registers its driver by descriptor (name, kind,
 * probe); the driver module (vpc.ts) loads on the first open or create of
 * the format. Code outside src/formats/vpc/ reaches vpc only through the
 * driver registry (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerLazyDriver } from '../../block/driver.js';
import { vpcProbe } from './probe.js';

registerLazyDriver({ name: 'vpc', kind: 'format', probe: vpcProbe, load: () => import('./vpc.js').then((m) => m.vpcDriver) });
