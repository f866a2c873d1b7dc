// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of
// VHDX headers, region tables and log entries: the running register over
// [ptr, ptr + len), without the initial or final inversion (the caller
// chains pieces, as src/formats/vhdx/crc32c.ts's crc32cUpdate).
//
// Slicing-by-8: eight 256-entry tables in static memory, built on the first
// call; TABLES[k][b] is the register after byte b and k zero bytes, so eight
// bytes take eight lookups XOR-ed together instead of eight dependent steps.
//
//   TABLES  + k * 1024 + b * 4   (u32)   k = 0..7, b = 0..255

const TABLES: usize = memory.data(8 * 256 * 4, 16);
let built = false;

function build(): void {
  for (let i: u32 = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    store<u32>(TABLES + (<usize>i << 2), c);
  }
  for (let i: u32 = 0; i < 256; i++) {
    let c = load<u32>(TABLES + (<usize>i << 2));
    for (let k: usize = 1; k < 8; k++) {
      c = load<u32>(TABLES + (<usize>(c & 0xff) << 2)) ^ (c >>> 8);
      store<u32>(TABLES + (k << 10) + (<usize>i << 2), c);
    }
  }
  built = true;
}

// @ts-ignore: decorator
@inline function tab(k: usize, b: u32): u32 {
  return load<u32>(TABLES + (k << 10) + (<usize>b << 2));
}

export function crc32cUpdate(crc: u32, ptr: usize, len: usize): u32 {
  if (!built) build();
  let c = crc;
  let p = ptr;
  const end = ptr + len;
  while (p < end && (p & 7) != 0) {
    c = tab(0, (c ^ load<u8>(p)) & 0xff) ^ (c >>> 8);
    p++;
  }
  while (p + 8 <= end) {
    const lo = c ^ load<u32>(p);
    const hi = load<u32>(p, 4);
    c =
      tab(7, lo & 0xff) ^ tab(6, (lo >>> 8) & 0xff) ^ tab(5, (lo >>> 16) & 0xff) ^ tab(4, lo >>> 24) ^
      tab(3, hi & 0xff) ^ tab(2, (hi >>> 8) & 0xff) ^ tab(1, (hi >>> 16) & 0xff) ^ tab(0, hi >>> 24);
    p += 8;
  }
  while (p < end) {
    c = tab(0, (c ^ load<u8>(p)) & 0xff) ^ (c >>> 8);
    p++;
  }
  return c;
}
