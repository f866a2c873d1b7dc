/**
 * The vhdx format's entry: registers its driver by descriptor (name, kind,
 * probe); the driver module (vhdx.ts) loads on the first open or create of
 * the format. Code outside src/formats/vhdx/ reaches vhdx only through the
 * driver registry (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerLazyDriver } from '../../block/driver.js';
import { vhdxProbe } from './probe.js';

registerLazyDriver({ name: 'vhdx', kind: 'format', probe: vhdxProbe, load: () => import('./vhdx.js').then((m) => m.vhdxDriver) });
