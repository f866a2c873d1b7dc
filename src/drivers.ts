/**
 * Registers every environment-neutral driver. Import this once (the index,
 * the CLI and the worker do) before opening images. Node-only drivers (file)
 * are registered by src/node.ts.
 */
import './formats/raw/raw.js';
import './formats/qcow2/qcow2.js';
import './formats/vdi/vdi.js';
import './formats/vpc/vpc.js';
import './formats/qed/qed.js';
import './formats/qcow/qcow.js';
import './formats/parallels/parallels.js';
import './protocols/memory.js';
