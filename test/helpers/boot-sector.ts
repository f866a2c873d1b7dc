/**
 * A tiny x86 guest for the emulator tests, hand-assembled (no assembler in
 * CI): a boot sector that reads sector 1 of the first hard disk with BIOS
 * int 13h (CHS 0/0/2), inverts its 512 bytes, writes them to sector 2
 * (CHS 0/0/3) and halts. Sector 2 = ~sector 1 proves the guest read through
 * the disk and wrote back through it.
 */
const CODE = [
  0xfa, //                  cli
  0x31, 0xc0, //            xor ax, ax
  0x8e, 0xd8, //            mov ds, ax
  0x8e, 0xc0, //            mov es, ax
  0x8e, 0xd0, //            mov ss, ax
  0xbc, 0x00, 0x7c, //      mov sp, 0x7c00
  0xfb, //                  sti
  0xb8, 0x01, 0x02, //      mov ax, 0x0201      ; read 1 sector
  0xb9, 0x02, 0x00, //      mov cx, 0x0002      ; cylinder 0, sector 2
  0xb6, 0x00, //            mov dh, 0           ; head 0
  0xb2, 0x80, //            mov dl, 0x80        ; first hard disk
  0xbb, 0x00, 0x80, //      mov bx, 0x8000      ; into 0000:8000
  0xcd, 0x13, //            int 0x13
  0x72, 0x1a, //            jc halt
  0xbe, 0x00, 0x80, //      mov si, 0x8000
  0xb9, 0x00, 0x02, //      mov cx, 512
  0xf6, 0x14, //     next:  not byte [si]
  0x46, //                  inc si
  0xe2, 0xfb, //            loop next
  0xb8, 0x01, 0x03, //      mov ax, 0x0301      ; write 1 sector
  0xb9, 0x03, 0x00, //      mov cx, 0x0003      ; cylinder 0, sector 3
  0xb6, 0x00, //            mov dh, 0
  0xb2, 0x80, //            mov dl, 0x80
  0xbb, 0x00, 0x80, //      mov bx, 0x8000
  0xcd, 0x13, //            int 0x13
  0xfa, //           halt:  cli
  0xf4, //                  hlt
  0xeb, 0xfc, //            jmp halt
];

/** The 512-byte boot sector (with the 0x55 0xAA signature). */
export function bootSector(): Uint8Array {
  const s = new Uint8Array(512);
  s.set(CODE);
  s[510] = 0x55;
  s[511] = 0xaa;
  return s;
}

/** What the guest leaves in sector 2 after reading `sector1`. */
export function guestMarker(sector1: Uint8Array): Uint8Array {
  return sector1.map((b) => ~b & 0xff);
}
