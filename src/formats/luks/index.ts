/**
 * The luks format's entry: registers its driver by descriptor (name, kind,
 * probe); the driver module (luks.ts) loads on the first open or create of
 * the format. Code outside src/formats/luks/ reaches luks only through the
 * driver registry (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerLazyDriver } from '../../block/driver.js';
import { luksProbe } from './probe.js';

registerLazyDriver({ name: 'luks', kind: 'format', probe: luksProbe, load: () => import('./luks.js').then((m) => m.luksDriver) });
