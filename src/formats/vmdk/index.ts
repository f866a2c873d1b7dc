/**
 * The vmdk format's entry: registers its driver. Code outside
 * src/formats/vmdk/ reaches vmdk only through the driver registry
 * (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerDriver } from '../../block/driver.js';
import { vmdkDriver } from './vmdk.js';

registerDriver(vmdkDriver);
