/**
 * The vpc format's entry: registers its driver. Code outside
 * src/formats/vpc/ reaches it only through the driver registry
 * (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerDriver } from '../../block/driver.js';
import { vpcDriver } from './vpc.js';

registerDriver(vpcDriver);
