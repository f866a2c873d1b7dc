/**
 * The qcow format's entry: registers its driver. Code outside
 * src/formats/qcow/ reaches it only through the driver registry
 * (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerDriver } from '../../block/driver.js';
import { qcowDriver } from './qcow.js';

registerDriver(qcowDriver);
