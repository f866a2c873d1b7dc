/**
 * The qcow2 format's entry: registers its driver. Code outside
 * src/formats/qcow2/ reaches qcow2 only through the driver registry
 * (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerDriver } from '../../block/driver.js';
import { qcow2Driver } from './qcow2.js';

registerDriver(qcow2Driver);
