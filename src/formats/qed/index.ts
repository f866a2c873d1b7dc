/**
 * The qed format's entry: registers its driver. Code outside
 * src/formats/qed/ reaches it only through the driver registry
 * (src/block/driver.ts); src/drivers.ts imports this file.
 */
import { registerDriver } from '../../block/driver.js';
import { qedDriver } from './qed.js';

registerDriver(qedDriver);
