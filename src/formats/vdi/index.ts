/**
 * The vdi format's entry: registers its driver by descriptor (name, kind,
 * probe); the driver module (vdi.ts) loads on the first open or create of
 * the format. Code outside src/formats/vdi/ reaches vdi only through the
 * driver registry (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerLazyDriver } from '../../block/driver.js';
import { vdiProbe } from './probe.js';

registerLazyDriver({ name: 'vdi', kind: 'format', probe: vdiProbe, load: () => import('./vdi.js').then((m) => m.vdiDriver) });
