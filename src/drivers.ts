/**
 * Registers every environment-neutral driver. Import this once (the index,
 * the CLI and the worker do) before opening images. Node-only drivers (file)
 * are registered by src/node.ts.
 */
import './formats/raw/index.js';
import './formats/qcow2/index.js';
import './formats/vdi/index.js';
import './formats/vpc/index.js';
import './formats/qed/index.js';
import './formats/qcow/index.js';
import './formats/parallels/index.js';
import './protocols/memory.js';
import './formats/vmdk/index.js';
import './formats/vhdx/index.js';
import './formats/dmg/index.js';
import './formats/cloop/index.js';
import './formats/bochs/index.js';
import './formats/luks/index.js';
import './filters/throttle.js';
import './filters/blkdebug.js';
import './protocols/null.js';
import './filters/copy-on-read.js';
import './filters/quorum.js';
import './filters/compress.js';
