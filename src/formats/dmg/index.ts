/**
 * The dmg format's entry: registers its driver by descriptor (name, kind,
 * probe); the driver module (dmg.ts) loads on the first open or create of
 * the format. Code outside src/formats/dmg/ reaches dmg only through the
 * driver registry (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerLazyDriver } from '../../block/driver.js';
import { dmgProbe } from './probe.js';

registerLazyDriver({ name: 'dmg', kind: 'format', probe: dmgProbe, load: () => import('./dmg.js').then((m) => m.dmgDriver) });
