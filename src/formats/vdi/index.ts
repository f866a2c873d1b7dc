/**
 * The vdi format's entry: registers its driver. Code outside
 * src/formats/vdi/ reaches it only through the driver registry
 * (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerDriver } from '../../block/driver.js';
import { vdiDriver } from './vdi.js';

registerDriver(vdiDriver);
