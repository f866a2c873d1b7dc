/**
 * The raw format's entry: registers its driver by descriptor (name, kind,
 * probe); the driver module (raw.ts) loads on the first open or create of
 * the format. Code outside src/formats/raw/ reaches raw only through the
 * driver registry (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerLazyDriver } from '../../block/driver.js';
import { rawProbe } from './probe.js';

registerLazyDriver({ name: 'raw', kind: 'format', probe: rawProbe, load: () => import('./raw.js').then((m) => m.rawDriver) });
