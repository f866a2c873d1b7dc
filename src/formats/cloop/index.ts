/**
 * The cloop format's entry: registers its driver by descriptor (name, kind,
 * probe); the driver module (cloop.ts) loads on the first open or create of
 * the format. Code outside src/formats/cloop/ reaches cloop only through the
 * driver registry (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerLazyDriver } from '../../block/driver.js';
import { cloopProbe } from './probe.js';

registerLazyDriver({ name: 'cloop', kind: 'format', probe: cloopProbe, load: () => import('./cloop.js').then((m) => m.cloopDriver) });
