/**
 * The parallels format's entry: registers its driver by descriptor (name, kind,
 * probe); the driver module (parallels.ts) loads on the first open or create of
 * the format. Code outside src/formats/parallels/ reaches parallels only through the
 * driver registry (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerLazyDriver } from '../../block/driver.js';
import { parallelsProbe } from './probe.js';

registerLazyDriver({ name: 'parallels', kind: 'format', probe: parallelsProbe, load: () => import('./parallels.js').then((m) => m.parallelsDriver) });
