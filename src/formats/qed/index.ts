/**
 * The qed format's entry: registers its driver by descriptor (name, kind,
 * probe); the driver module (qed.ts) loads on the first open or create of
 * the format. Code outside src/formats/qed/ reaches qed only through the
 * driver registry (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerLazyDriver } from '../../block/driver.js';
import { qedProbe } from './probe.js';

registerLazyDriver({ name: 'qed', kind: 'format', probe: qedProbe, load: () => import('./qed.js').then((m) => m.qedDriver) });
