/**
 * The qcow format's entry: registers its driver by descriptor (name, kind,
 * probe); the driver module (qcow.ts) loads on the first open or create of
 * the format. Code outside src/formats/qcow/ reaches qcow only through the
 * driver registry (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerLazyDriver } from '../../block/driver.js';
import { qcowProbe } from './probe.js';

registerLazyDriver({ name: 'qcow', kind: 'format', probe: qcowProbe, load: () => import('./qcow.js').then((m) => m.qcowDriver) });
