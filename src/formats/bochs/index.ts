/**
 * The bochs format's entry: registers its driver by descriptor (name, kind,
 * probe); the driver module (bochs.ts) loads on the first open or create of
 * the format. Code outside src/formats/bochs/ reaches bochs only through the
 * driver registry (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerLazyDriver } from '../../block/driver.js';
import { bochsProbe } from './probe.js';

registerLazyDriver({ name: 'bochs', kind: 'format', probe: bochsProbe, load: () => import('./bochs.js').then((m) => m.bochsDriver) });
