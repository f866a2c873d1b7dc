/**
 * The dmg format's entry: registers its driver. Code outside
 * src/formats/dmg/ reaches dmg only through the driver registry
 * (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerDriver } from '../../block/driver.js';
import { dmgDriver } from './dmg.js';

registerDriver(dmgDriver);
