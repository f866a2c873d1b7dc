/**
 * The luks format's entry: registers its driver. Code outside
 * src/formats/luks/ reaches luks only through the driver registry
 * (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerDriver } from '../../block/driver.js';
import { luksDriver } from './luks.js';

registerDriver(luksDriver);
