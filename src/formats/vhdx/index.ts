/**
 * The vhdx format's entry: registers its driver. Code outside
 * src/formats/vhdx/ reaches vhdx only through the driver registry
 * (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerDriver } from '../../block/driver.js';
import { vhdxDriver } from './vhdx.js';

registerDriver(vhdxDriver);
