/**
 * Registers every environment-neutral driver. Import this once (the index,
 * the CLI and the worker do) before opening images. Node-only drivers (file)
 * are registered by src/node.ts.
 */
import './formats/raw/raw.js';
import './formats/qcow2/qcow2.js';
import './protocols/memory.js';
import './formats/dmg/dmg.js';
import './formats/cloop/cloop.js';
import './formats/bochs/bochs.js';
import './formats/luks/luks.js';
