/**
 * The bochs format's entry: registers its driver. Code outside
 * src/formats/bochs/ reaches bochs only through the driver registry
 * (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerDriver } from '../../block/driver.js';
import { bochsDriver } from './bochs.js';

registerDriver(bochsDriver);
