/**
 * The qcow2 format's entry: registers its driver by descriptor (name, kind,
 * probe); the driver module (qcow2.ts) loads on the first open or create of
 * the format. Code outside src/formats/qcow2/ reaches qcow2 only through the
 * driver registry (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerLazyDriver } from '../../block/driver.js';
import { qcow2Probe } from './probe.js';

registerLazyDriver({ name: 'qcow2', kind: 'format', probe: qcow2Probe, load: () => import('./qcow2.js').then((m) => m.qcow2Driver) });
