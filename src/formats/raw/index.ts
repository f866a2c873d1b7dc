/**
 * The raw format's entry: registers its driver. Code outside
 * src/formats/raw/ reaches raw only through the driver registry
 * (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerDriver } from '../../block/driver.js';
import { rawDriver } from './raw.js';

registerDriver(rawDriver);
