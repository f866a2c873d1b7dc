/**
 * The cloop format's entry: registers its driver. Code outside
 * src/formats/cloop/ reaches cloop only through the driver registry
 * (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerDriver } from '../../block/driver.js';
import { cloopDriver } from './cloop.js';

registerDriver(cloopDriver);
