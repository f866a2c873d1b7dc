/**
 * The parallels format's entry: registers its driver. Code outside
 * src/formats/parallels/ reaches it only through the driver registry
 * (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerDriver } from '../../block/driver.js';
import { parallelsDriver } from './parallels.js';

registerDriver(parallelsDriver);
