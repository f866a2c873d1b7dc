/**
 * The BlockDriver contract, the driver registry and format probing.
 *
 * A driver is a plain object, like QEMU's static `BlockDriver` tables: a name,
 * a kind, capability flags and callbacks. Per-node state lives in
 * `BlockNode.opaque`, which `open` fills in. Every optional callback has a
 * fallback in the core (src/block/io.ts, src/block/status.ts), so a driver
 * implements only what its format really does.
 *
 * Callers of these callbacks are the core's request functions, never user
 * code; the guarantees written on each member are what the core checks before
 * it calls.
 */
import type { BlockNode } from './node.js';
import type { ImageInfoSpecific, SnapshotInfo } from './info.js';
import type { OptionDesc, OptionValues } from './options.js';

export type DriverKind = 'format' | 'protocol' | 'filter';

/** Flags on a write request. */
export interface WriteFlags {
  /** Force unit access: the data must be stable when the call returns. */
  fua?: boolean;
  /** With pwriteZeroes: the driver may deallocate instead of writing zeros. */
  mayUnmap?: boolean;
  /** With pwriteZeroes: fail with ENOTSUP rather than writing explicit zeros. */
  noFallback?: boolean;
  /** With pwritev: store the data compressed (qcow2 `-c`). */
  compressed?: boolean;
  /**
   * With `compressed`, for a request of one cluster: what the driver's
   * `compressCluster` returned for this data (null: it does not shrink), so
   * the driver does not compress it again. Lets a caller compress several
   * clusters at once and still write them in order.
   */
  precompressed?: Uint8Array | null;
  /**
   * For the request path only (never passed to a driver): the write puts
   * data the node already shows into its own layer (copy-on-read, a stream
   * job), so what the guest sees does not change — the node's dirty bitmaps
   * and written-offset statistics skip it, as QEMU's copy-on-read path does.
   * Writes the driver then makes to its children count as usual.
   */
  copyOnRead?: boolean;
}

/** Options given to `open`: driver-specific keys plus the generic ones below. */
export interface OpenOptions {
  /** Open for reading only; writes fail with EPERM/EROFS. */
  readOnly?: boolean;
  /** QEMU's BDRV_O_NO_IO: the caller only asks for metadata (info), so an encrypted image may open without its key. */
  noIo?: boolean;
  /** Driver-specific options (`offset`, `size` for raw; `l2-cache-size` for qcow2; …). */
  [key: string]: unknown;
}

/** One answer of `blockStatus`: the status flags hold for `pnum` bytes from the offset asked. */
export interface BlockStatus {
  /** BDRV_BLOCK_* flags, see status.ts. */
  status: number;
  /** Number of bytes the answer holds for (> 0 unless at end of file). */
  pnum: number;
  /** With BDRV_BLOCK_OFFSET_VALID: the offset in `file` where the data lives. */
  map?: number;
  /** With BDRV_BLOCK_OFFSET_VALID: the node holding the data at `map`. */
  file?: BlockNode;
}

export interface CheckResult {
  corruptions: number;
  leaks: number;
  checkErrors: number;
  corruptionsFixed: number;
  leaksFixed: number;
  imageEndOffset?: number;
  totalClusters?: number;
  allocatedClusters?: number;
  fragmentedClusters?: number;
  compressedClusters?: number;
}

/**
 * Where a check's human-readable lines go, one call per line (no newline) in
 * the order qemu-img prints them on stderr, as the check finds them. A check
 * keeps none: an image can produce millions (one per leaked cluster).
 */
export type CheckReport = (line: string) => void;

/**
 * A check line starting with this is an error report (QEMU's error_report):
 * the CLI prints the tool's name and ': ' in its place.
 */
export const CHECK_REPORT_MARK = '\u0001';

/** What a format's `create` is given (the arguments of QEMU's bdrv_co_create_opts). */
export interface ImageCreateRequest {
  /** The new image's name as the caller spelled it: for messages, and names the image stores are relative to it. */
  filename: string;
  /** Virtual size in bytes, a safe integer, not rounded (the format rounds as it must); >= 0 from qemu-img, QAPI's int as given from blockdev-create. */
  size: number;
  /**
   * The creation options, parsed against the driver's `createOptions` followed
   * by the storage's list: names from those tables only, sizes normalised to
   * bytes, `size` set, `backing_file` / `backing_fmt` holding -b / -F. The
   * values are not checked further: the format refuses what it cannot make.
   */
  values: OptionValues;
  /**
   * Who asks. `qemu-img` (create, convert): lenient, as qemu-img's option
   * path (sizes rounded up to 512 bytes). `blockdev-create`: QAPI's strict
   * checks (a size that is not a multiple of 512 is refused).
   */
  origin: 'qemu-img' | 'blockdev-create';
  /**
   * Opens the further file that option `option` names (qcow2's data_file),
   * created or emptied, read-write. The caller closes it after `create`.
   */
  openFile(option: string): Promise<BlockNode>;
  /**
   * Creates (or empties) the further file `name`, relative to the image, and
   * opens it read-write: files the format names itself (vmdk's extents).
   * The caller closes it after `create`. Absent where the caller has no
   * storage to make files in (blockdev-create).
   */
  createFile?(name: string): Promise<BlockNode>;
  /**
   * Opens the image `name`, relative to the new image (format `format`, or
   * probed), read-only and without its backing chain: a parent the format
   * records something of (vmdk's CID). The caller closes it after `create`.
   */
  openImage?(name: string, format?: string): Promise<BlockNode>;
}

/**
 * A member type in QEMU's QAPI schema, as blockdev-add checks it: a node
 * reference (`BlockdevRef`, a node name or nested options), `…OrNull`, an enum.
 */
export type QapiMemberType = 'str' | 'int' | 'bool' | 'any' | 'BlockdevRef' | 'BlockdevRefOrNull' | { enum: readonly string[] };

/** qemu-img measure's answer (QAPI BlockMeasureInfo). */
/** Progress of an amend (QEMU's BlockDriverAmendStatusCB): `offset` units of `total` done. */
export type AmendStatus = (offset: number, total: number) => void;

export interface MeasureResult {
  required: number;
  fullyAllocated: number;
  /** Bytes the input's persistent bitmaps need in the new image (formats that can carry them). */
  bitmaps?: number;
  /**
   * The figures are exact even past 2^53 (a double then holds them only when
   * the format's arithmetic cannot round, as raw's sector rounding of an exact
   * size); without it the CLI refuses results past 2^53 rather than print them rounded.
   */
  exact?: boolean;
}

export interface BlockDriver {
  readonly name: string;
  readonly kind: DriverKind;

  /** The format keeps a backing file (qcow2 does, raw does not). */
  readonly supportsBacking?: boolean;
  /**
   * Open options that change what the node reads (QEMU's strong runtime
   * options, a key secret): a node opened with one is named by its json:
   * options, as the filename alone would not open it the same way.
   */
  readonly strongRuntimeOpts?: readonly string[];
  /**
   * For drivers whose options that change what the node does are not a fixed
   * list (blkdebug's `inject-error.N.*`, …): false when `options` hold one,
   * so a plain file name would not open the node the same way (QEMU's
   * exact_filename left empty by the driver's refresh_filename).
   */
  hasExactFilename?(options: Readonly<Record<string, unknown>>): boolean;
  /** pwritev accepts `{ compressed: true }` (qcow2); elsewhere such writes fail with ENOTSUP, as in QEMU. */
  readonly supportsCompressedWrites?: boolean;
  /**
   * With supportsCompressedWrites: compresses one cluster of guest data
   * (shorter only for the image's last cluster) as a compressed pwritev
   * would store it; null when it does not shrink. Changes nothing, so calls
   * may run in parallel; the result goes back in `WriteFlags.precompressed`.
   */
  compressCluster?(bs: BlockNode, data: Uint8Array): Promise<Uint8Array | null>;
  /** How many compressCluster calls run at once (a compression pool's threads); absent, convert keeps -m batches in flight. */
  compressThreads?(bs: BlockNode): number;
  /**
   * False when a newly created image does not read as zeros (QEMU's
   * bdrv_has_zero_init answering 0: luks, whose fresh payload decrypts to
   * noise), so convert writes zeros instead of skipping them. Default true.
   * A function answers for one open image (qcow2: an encrypted image with
   * preallocated metadata reads as noise too); the static `false` says no
   * image of the format ever does.
   */
  readonly hasZeroInit?: boolean | ((bs: BlockNode) => boolean);
  /**
   * The driver's children are a list under this option (quorum's
   * `children`), not one `file`: the opener opens each entry as an image
   * (a dict, probed unless it names a driver) and attaches it with role
   * `data`, named `<option>.N`, before calling `open`.
   */
  readonly childList?: string;
  /**
   * QEMU's bdrv_dirname for this node: the directory that relative names
   * stored in images above it resolve against. Drivers with no single
   * directory below them (quorum) throw, with QEMU's text. Without it the
   * core asks the file child, or takes a protocol node's filename.
   */
  dirname?(bs: BlockNode): string;
  /**
   * Every write lands at its own offset (of the node, or of its `file` child
   * shifted by a fixed amount) and allocates nothing whose place depends on
   * the order of writes: raw, and protocols over plain storage. Writes to
   * such a node may overlap in time without changing the result, so convert
   * has the next step's write in flight before the previous one ends.
   */
  readonly writesInPlace?: boolean;
  /**
   * Writes may overlap in time and still give the result of the same writes
   * one at a time in call order: the node places each write (allocates its
   * clusters) in the order the calls arrive, before its data moves (qcow2).
   * Convert then has the next step's writes issued while one step's data is
   * still being written, once every write of that step is issued.
   */
  readonly allocatesInCallOrder?: boolean;
  /** Protocol drivers: `open` takes a filename rather than a `file` child. */
  readonly protocolName?: string;
  /**
   * A protocol with no storage behind it (null-co): opened from its options
   * alone (a BlockNode made with them, then `open`), anywhere.
   */
  readonly standalone?: boolean;

  /**
   * blockdev-add's members for this format (QAPI BlockdevOptions<Format>), as
   * QAPI's JSON writes them (`'*name'` for optional ones). The engine checks
   * them; the driver's `open` gets the values. Without it a format takes
   * `file`, and `backing` when it supports backing files.
   */
  readonly blockdevOptions?: Readonly<Record<string, QapiMemberType>>;

  /**
   * How sure the driver is that `head` (the first bytes of the image, at most
   * 2 KiB, possibly fewer for a short file) is in its format: 0 (not mine) to
   * 100. Never throws.
   */
  probe?(head: Uint8Array, filename: string): number;

  /**
   * Opens `bs`. For format and filter drivers `bs.file` is already attached;
   * for protocol drivers `bs.filename` names the storage. Sets `bs.opaque`,
   * `bs.totalBytes`, and `bs.limits` when they differ from the defaults, and
   * for formats with a backing file `bs.backingFile` / `bs.backingFormat`.
   * The core opens and attaches the backing child after `open` returns.
   */
  open(bs: BlockNode, options: OpenOptions): Promise<void>;

  /**
   * Releases the node's resources. Called once; no request is in flight.
   * A driver with persistent dirty bitmaps stores them here (QEMU's
   * inactivate), before the core releases the node's in-memory bitmaps.
   */
  close?(bs: BlockNode): Promise<void>;

  /**
   * Persistent dirty bitmaps (qcow2). A driver that has them loads the
   * image's bitmaps into the node's list (src/block/dirty-bitmap.ts) in
   * `open` and stores the persistent ones in `close`.
   *
   * canStoreNewDirtyBitmap: throws (naming the bitmap and the image) when a
   * new persistent bitmap `name` of `granularity` bytes could not be stored
   * (QEMU's bdrv_co_can_store_new_dirty_bitmap). Guarantees: `name` is not
   * a bitmap of the node yet; granularity is a power of two.
   */
  canStoreNewDirtyBitmap?(bs: BlockNode, name: string, granularity: number): void;
  /** Deletes the stored copy of bitmap `name`; a bitmap the image does not hold is no error. */
  removePersistentDirtyBitmap?(bs: BlockNode, name: string): Promise<void>;

  /**
   * Reads `bytes` bytes at `offset` into `buf` (buf.length === bytes).
   * Guarantees: offset and bytes are multiples of `bs.limits.requestAlignment`;
   * bytes <= limits.maxTransfer; the range may extend past `totalBytes` only
   * for protocol drivers whose length is not a multiple of the alignment, in
   * which case the driver zero-fills the tail.
   */
  preadv(bs: BlockNode, offset: number, bytes: number, buf: Uint8Array): Promise<void>;

  /**
   * Writes `buf` (buf.length === bytes) at `offset`. Same alignment and size
   * guarantees as preadv; the range is inside totalBytes for format drivers;
   * protocol drivers grow the file when writing past its end.
   */
  pwritev?(bs: BlockNode, offset: number, bytes: number, buf: Uint8Array, flags: WriteFlags): Promise<void>;

  /**
   * Makes the range read as zeros. Offset and bytes are aligned to
   * `limits.pwriteZeroesAlignment` (or requestAlignment). Throws ENOTSUP when
   * it cannot do better than writing a buffer of zeros; the core then does that.
   */
  pwriteZeroes?(bs: BlockNode, offset: number, bytes: number, flags: WriteFlags): Promise<void>;

  /**
   * Hints that the range is no longer needed. Advisory: may do nothing, or
   * throw ENOTSUP. A range not aligned to `limits.pdiscardAlignment` is
   * smaller than it and crosses no boundary of it (the core's head and tail
   * pieces); a range on the alignment is at most `limits.maxPdiscard`.
   */
  pdiscard?(bs: BlockNode, offset: number, bytes: number): Promise<void>;

  /** Makes every completed write stable. The core flushes children afterwards. */
  flush?(bs: BlockNode): Promise<void>;

  /**
   * Switches the node between read-only and read-write (QEMU's
   * bdrv_reopen_prepare/commit for the read-only flag). Called with the new
   * mode while `bs.readOnly` still holds the old one; the core sets it
   * afterwards. Children were switched first when they go read-write, and
   * are switched after this call when they go read-only. Without the hook
   * the core only flips the flag.
   */
  reopen?(bs: BlockNode, readOnly: boolean): Promise<void>;

  /**
   * Takes changed driver options at a reopen (QEMU's bdrv_reopen_prepare and
   * commit for the driver's own options; src/block/reopen.ts). `options` holds
   * only the keys given, of the driver's `blockdevOptions`; keys not given keep
   * their values. Called first with `check` for every node of the reopen (throw
   * to refuse; change nothing), then without it to apply, before a node goes
   * read-only and after it went read-write.
   */
  reopenOptions?(bs: BlockNode, options: Record<string, unknown>, mode: { check: boolean }): Promise<void>;

  /**
   * Changes the node's virtual size to `offset` bytes (qemu-img resize,
   * block_resize, a raw file's creation). Guarantees: the node is writable,
   * `offset` is a safe integer >= 0, dirty bitmaps are resized by the core
   * afterwards. A shrink reaches the driver only when the user asked for one.
   * `exact` forbids rounding the size up; `prealloc` says how new space is
   * backed (ENOTSUP for modes the format cannot do). Sets `bs.totalBytes`.
   */
  truncate?(bs: BlockNode, offset: number, exact: boolean, prealloc: PreallocMode): Promise<void>;

  /** Current length in bytes; the core uses `bs.totalBytes` when absent. */
  getLength?(bs: BlockNode): Promise<number>;

  /** Bytes the node takes in its storage ("disk size"), or undefined if unknown. */
  getAllocatedFileSize?(bs: BlockNode): Promise<number | undefined>;

  /** query-blockstats' `driver-specific` member for this node (QAPI BlockStatsSpecific), if the driver has one. */
  getStatsSpecific?(bs: BlockNode): Record<string, unknown>;

  /**
   * Block status of [offset, offset + bytes). Guarantees: offset <
   * totalBytes, bytes > 0, the range is inside totalBytes, offset aligned to
   * requestAlignment. May answer for fewer bytes (pnum) but never zero.
   * `wantZero` asks for the precise zero/data distinction (map, convert); without it
   * the driver may answer about allocation only (faster).
   */
  blockStatus?(bs: BlockNode, wantZero: boolean, offset: number, bytes: number): Promise<BlockStatus>;

  /**
   * A copy's hint, not block status: whether [offset, offset + bytes) reads
   * as zeros, for `pnum` bytes (0 < pnum <= bytes). For formats whose QEMU
   * driver has no block status (vhdx, bochs, dmg: qemu-img map calls every
   * byte data, and `blockStatus` must say the same) but which know without
   * reading that a range holds no data (an absent block). Convert asks it
   * where block status says data, and treats a zero answer as qemu-img
   * treats a data range its scan found all zero, so the target comes out
   * the same, without the read, the zero fill and the scan. `zero: true`
   * only where every byte reads as zero through this node (its backing
   * chain included); `zero: false` is always a correct answer. Guarantees:
   * as blockStatus (offset < totalBytes, bytes > 0, inside totalBytes,
   * offset aligned to requestAlignment). Use it through `readsAsZeros`
   * (status.ts).
   */
  readsAsZeros?(bs: BlockNode, offset: number, bytes: number): Promise<{ zero: boolean; pnum: number }>;

  /** Format-specific facts for `info` (qemu-img's "format-specific"). */
  getInfo?(bs: BlockNode): ImageInfoSpecific | undefined;

  /**
   * Cluster size, dirty flag, and other generic facts (qemu-img's BlockDriverInfo).
   * Undefined: the driver cannot answer (QEMU's -ENOTSUP, as for curl), so info omits the dirty flag.
   */
  getDriverInfo?(bs: BlockNode): DriverInfo | undefined;

  /**
   * Internal snapshots, as `qemu-img snapshot -l` lists them. The create,
   * apply and delete hooks are called on a writable node with no request in
   * flight; `idOrName` / `id` / `name` are as the user gave them (the driver
   * looks them up and answers ENOENT for none).
   */
  listSnapshots?(bs: BlockNode): SnapshotInfo[];
  createSnapshot?(bs: BlockNode, sn: { name: string; vmStateSize?: number; dateSec?: number; dateNsec?: number; vmClockNsec?: number; icount?: number }): Promise<void>;
  applySnapshot?(bs: BlockNode, idOrName: string): Promise<void>;
  deleteSnapshot?(bs: BlockNode, id: string | undefined, name: string | undefined): Promise<void>;
  /**
   * QEMU's bdrv_snapshot_load_tmp: makes a read-only node show the snapshot
   * `idOrName` (by id first, then by name) instead of the active state, without
   * writing anything. Guarantees: `bs` is read-only with no request in flight.
   */
  snapshotLoadTmp?(bs: BlockNode, idOrName: string): Promise<void>;

  /**
   * Consistency check, as `qemu-img check`. With `fix.leaks` / `fix.errors`
   * the node is writable (opened with the `check` option, so a corrupt image
   * still opens) and the driver repairs what it may; otherwise it only reads.
   * Formats without a check leave this out (qemu-img's exit 63). Each line
   * found goes to `report` at once (also before a failure is thrown).
   */
  check?(bs: BlockNode, fix: { leaks: boolean; errors: boolean }, report: CheckReport): Promise<CheckResult>;

  /** Rewrites the backing file name and format in the image's metadata. */
  changeBackingFile?(bs: BlockNode, backingFile: string | null, backingFormat: string | null): Promise<void>;

  // ------------------------------------------------ what qemu-img needs per format

  /**
   * The creation options (QEMU's create_opts) in table order, with defaults
   * and help text: what `qemu-img create -f FMT -o help` lists and the
   * "Formatting ..." line prints. A format without it cannot be created.
   */
  readonly createOptions?: readonly OptionDesc[];

  /**
   * Writes a new, empty image onto `file` (QEMU's bdrv_co_create_opts).
   * Guarantees: `file` is a protocol node opened read-write, of length 0,
   * used by nothing else; `req` is as ImageCreateRequest describes. The
   * caller flushes and closes `file` afterwards, and names the image in
   * messages (errors thrown here say what is wrong, not which file).
   */
  create?(file: BlockNode, req: ImageCreateRequest): Promise<void>;
  /**
   * Checks the creation options before any file is made or emptied, for the
   * formats whose QEMU driver parses its options first (qcow2, luks, vmdk):
   * an error here leaves an existing file untouched and makes no new one.
   * Guarantees: `req` is what `create` will get; nothing is opened yet.
   */
  checkCreate?(req: ImageCreateRequest): void;
  /**
   * A failed create removes the image file, even one that existed before
   * (QEMU's bdrv_co_delete_file_noerr in qcow2's and luks's create): no
   * half-made image is left behind.
   */
  createRemovesFileOnError?: boolean;

  /**
   * `create` takes sizes from 2^53 bytes up (not exact as JS numbers): it
   * refuses them with the format's own message where the format cannot hold
   * them (qcow2: "The image size is too large…") and with EFBIG otherwise.
   * Without it the core refuses such sizes before calling `create`.
   */
  readonly createChecksSize?: boolean;

  /**
   * `qemu-img measure -O FMT`: the bytes a new image needs. Exactly one of
   * `input` (an opened image of any format, with its backing chain; read
   * through block status only) and `size` (bytes, a safe integer >= 0) is
   * given. `values` are parsed against `createOptions` and the storage's list.
   */
  measure?(values: OptionValues, input: BlockNode | undefined, size: number | undefined): Promise<MeasureResult>;

  /** The options `qemu-img amend` accepts (QEMU's amend_opts), in table order. */
  readonly amendOptions?: readonly OptionDesc[];

  /**
   * Changes format options in place (qemu-img amend). Guarantees: `bs` is
   * writable and opened with its backing chain; `values` were parsed against
   * `createOptions` + `amendOptions` and hold only names from `amendOptions`
   * (the caller refuses creation-only options). The driver refuses the
   * values it cannot apply, before changing anything. `force` is qemu-img
   * amend's --force (allows what would lose data, e.g. erasing the last
   * LUKS key slot). `status` hears how far the work went (`offset` of
   * `total` units; qemu-img amend -p prints it).
   */
  amend?(bs: BlockNode, values: OptionValues, force?: boolean, status?: AmendStatus): Promise<void>;

  /**
   * Drops every allocation so the whole image reads through to its backing
   * file, or as zeros without one (QEMU's bdrv_make_empty: commit empties
   * the top image with it). Guarantees: `bs` is writable, no request is in
   * flight on it. Call it through bdrvMakeEmpty (src/block/io.ts), which
   * tells dirty bitmaps and flushes.
   */
  makeEmpty?(bs: BlockNode): Promise<void>;

  /**
   * The VM state area (QEMU's bdrv_save_vmstate / bdrv_load_vmstate): bytes a
   * savevm keeps beside the disk, at `pos` of an area of its own, not part of
   * the guest's disk and not bounded by its size. Drivers without one leave
   * these out; the request goes to their file child (see bdrvSaveVmState).
   * Guarantees: `buf` holds at least `bytes`; writes only on a writable node.
   */
  saveVmState?(bs: BlockNode, pos: number, bytes: number, buf: Uint8Array): Promise<void>;
  loadVmState?(bs: BlockNode, pos: number, bytes: number, buf: Uint8Array): Promise<void>;
}

export type PreallocMode = 'off' | 'metadata' | 'falloc' | 'full';

export interface DriverInfo {
  clusterSize?: number;
  /** Every write must be a whole compressed cluster (a streamOptimized vmdk): convert then copies as with -c. */
  needsCompressedWrites?: boolean;
  isDirty?: boolean;
  vmStateOffset?: number;
}

// ---------------------------------------------------------------- registry
//
// The registry holds a light descriptor per driver (name, kind, probe) and
// the driver itself once its module is loaded. Formats register lazily
// (src/formats/<name>/index.ts: the descriptor and a `load` that imports the
// driver module), so a process compiles only the formats it opens: the CLI's
// start-up parses qcow2 for `info disk.qcow2`, not vmdk, vhdx and the rest.
// Lookups by name are therefore async (`loadDriver`); `findDriver` is the
// synchronous lookup for code that runs after a load (an open node's image
// options, the engine's schema checks once `loadDrivers` ran).

/** What the registry knows of a driver before its module is loaded. */
export interface DriverDescriptor {
  readonly name: string;
  readonly kind: DriverKind;
  /** As BlockDriver.probe: needs only the image's first bytes and its name. */
  probe?(head: Uint8Array, filename: string): number;
}

/** A driver registered by descriptor: `load` imports its module (once, on first use). */
export interface LazyDriver extends DriverDescriptor {
  load(): Promise<BlockDriver>;
}

interface DriverEntry {
  desc: DriverDescriptor;
  driver?: BlockDriver;
  load?: () => Promise<BlockDriver>;
  loading?: Promise<BlockDriver>;
}

const drivers = new Map<string, DriverEntry>();

/** Registers a loaded driver under its name. Later registrations replace earlier ones. */
/** QEMU's bdrv_has_zero_init for an open image: whether its unwritten space reads as zeros. */
export function hasZeroInit(bs: BlockNode): boolean {
  const z = bs.driver.hasZeroInit;
  return typeof z === 'function' ? z(bs) : z !== false;
}

/**
 * Whether writes to `bs` land in place all the way down (the node's driver
 * and every `file` child below it say `writesInPlace`; no backing file).
 */
export function writesInPlace(bs: BlockNode): boolean {
  for (let n: BlockNode | undefined = bs; n; n = n.file?.node) {
    if (n.driver.writesInPlace !== true || n.backing) return false;
  }
  return true;
}

/**
 * Whether writes to `bs` may overlap in time (no backing file, every `file`
 * child below it `writesInPlace`): 'in-place' when `bs` itself writes in
 * place, 'call-order' when it allocates in call order, else null.
 */
export function overlappingWrites(bs: BlockNode): 'in-place' | 'call-order' | null {
  const below = bs.file?.node;
  if (bs.backing || (below && !writesInPlace(below))) return null;
  if (bs.driver.writesInPlace === true) return 'in-place';
  return bs.driver.allocatesInCallOrder === true ? 'call-order' : null;
}

export function registerDriver(drv: BlockDriver): void {
  drivers.set(drv.name, { desc: drv, driver: drv });
}

/** Registers a driver by descriptor; its module loads on the first `loadDriver` of its name. */
export function registerLazyDriver(lazy: LazyDriver): void {
  const { load, ...desc } = lazy;
  drivers.set(lazy.name, { desc, load });
}

/**
 * The driver `name`, loading its module if it is not loaded yet; undefined
 * when no driver of that name is registered.
 */
export async function loadDriver(name: string): Promise<BlockDriver | undefined> {
  const e = drivers.get(name);
  if (!e) return undefined;
  if (e.driver) return e.driver;
  e.loading ??= e.load!().then((drv) => {
    if (drv.name !== e.desc.name || drv.kind !== e.desc.kind || drv.probe !== e.desc.probe) {
      throw new Error(`driver '${name}': the loaded module does not match its registered descriptor (name, kind, probe)`);
    }
    // A registration made meanwhile wins (registerDriver replaces).
    if (drivers.get(name) === e) e.driver = drv;
    return drv;
  });
  return e.loading;
}

/** Loads every registered driver (of `kind`) and returns them. */
export async function loadDrivers(kind?: DriverKind): Promise<BlockDriver[]> {
  const names = listDrivers(kind).map((d) => d.name);
  const out = await Promise.all(names.map((n) => loadDriver(n)));
  return out.filter((d): d is BlockDriver => d !== undefined);
}

/**
 * The loaded driver `name`, or undefined when no driver has that name.
 * Synchronous: a registered driver whose module is not loaded yet is a bug
 * in the caller (it should `await loadDriver(name)` first), so it throws.
 */
export function findDriver(name: string): BlockDriver | undefined {
  const e = drivers.get(name);
  if (!e) return undefined;
  if (!e.driver) throw new Error(`driver '${name}' is registered but not loaded yet: await loadDriver('${name}') before looking it up`);
  return e.driver;
}

/** Whether driver `name`'s module is loaded (tests check that opening one format loads no other). */
export function isDriverLoaded(name: string): boolean {
  return drivers.get(name)?.driver !== undefined;
}

/** The descriptor of driver `name` (loaded or not), or undefined. */
export function driverInfo(name: string): DriverDescriptor | undefined {
  return drivers.get(name)?.desc;
}

/** Descriptors of the registered drivers (of `kind`), loaded or not, in registration order. */
export function listDrivers(kind?: DriverKind): DriverDescriptor[] {
  return [...drivers.values()].map((e) => e.desc).filter((d) => kind === undefined || d.kind === kind);
}

/** Bytes of an image's head that probing looks at (as QEMU's BLOCK_PROBE_BUF_SIZE). */
export const PROBE_BUF_SIZE = 2048;

/**
 * Picks the format driver with the highest probe score (descriptors probe:
 * nothing is loaded). Raw scores 1 and is the fallback; `guessed` tells the
 * caller the answer is only a fallback, so it can warn and restrict writes to
 * the first sector, as QEMU does.
 */
export function probeFormat(head: Uint8Array, filename: string): { driver: DriverDescriptor; guessed: boolean } {
  let best: DriverDescriptor | undefined;
  let bestScore = 0;
  for (const { desc } of drivers.values()) {
    if (desc.kind !== 'format' || !desc.probe) continue;
    let score = 0;
    try {
      score = desc.probe(head, filename);
    } catch {
      score = 0;
    }
    if (score > bestScore) {
      best = desc;
      bestScore = score;
    }
  }
  const raw = drivers.get('raw')?.desc;
  if (!best || best === raw) {
    if (!raw) throw new Error('raw driver is not registered');
    return { driver: raw, guessed: true };
  }
  return { driver: best, guessed: false };
}
