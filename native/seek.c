/*
 * lseek(SEEK_DATA / SEEK_HOLE) for blocktab's file protocol.
 *
 * Node's fs has no lseek, so without this tiny addon holes in host files look
 * like data. It exports two functions taking (fd, offset) and returning the
 * resulting offset, -1 when lseek fails with ENXIO (no more data past offset),
 * or -2 for any other failure (the file system does not support it), which
 * the TypeScript side treats as "unknown".
 *
 * punchHole(fd, offset, length) deallocates a range with fallocate(2)
 * (PUNCH_HOLE | KEEP_SIZE), as QEMU's file-posix does for a discard and a
 * write-zeroes that may unmap; zeroRange(fd, offset, length) makes a range
 * read as zeros keeping its blocks (ZERO_RANGE | KEEP_SIZE), as file-posix
 * does for a write-zeroes that may not; allocate(fd, offset, length) gives a
 * range blocks without changing a byte (KEEP_SIZE), before a large write.
 * All three return 0, or -errno (EOPNOTSUPP where the file system cannot).
 *
 * adviseHugePages(arrayBuffer) is the one memory call: see its comment.
 *
 * Offsets travel as doubles: they are below 2^53, which JS numbers hold exactly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdint.h>
#include <sys/mman.h>
#include <node_api.h>

static napi_value do_seek(napi_env env, napi_callback_info info, int whence) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd = -1;
  double off = 0;
  napi_value result;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_double(env, argv[1], &off) != napi_ok) {
    napi_create_double(env, -2, &result);
    return result;
  }
  off_t r = lseek(fd, (off_t)off, whence);
  double out = r >= 0 ? (double)r : (errno == ENXIO ? -1 : -2);
  napi_create_double(env, out, &result);
  return result;
}

static napi_value seek_data(napi_env env, napi_callback_info info) {
  return do_seek(env, info, SEEK_DATA);
}

static napi_value seek_hole(napi_env env, napi_callback_info info) {
  return do_seek(env, info, SEEK_HOLE);
}

/*
 * punchHole, zeroRange and allocate: fallocate(fd, mode, offset, length)
 * with the mode the export carries (its property's data, set in `init`): 0,
 * or -errno. allocate's mode, KEEP_SIZE alone, gives a range blocks without
 * changing a byte or the file's size: holes become allocated space that
 * reads as zeros, data stays (see src/protocols/file.ts for why).
 */
static napi_value do_fallocate(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  void *mode = NULL;
  int32_t fd = -1;
  double off = 0, len = 0;
  napi_value result;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, &mode) != napi_ok || argc < 3 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_double(env, argv[1], &off) != napi_ok ||
      napi_get_value_double(env, argv[2], &len) != napi_ok) {
    napi_create_double(env, -EINVAL, &result);
    return result;
  }
  int r = fallocate(fd, (int)(intptr_t)mode, (off_t)off, (off_t)len);
  napi_create_double(env, r == 0 ? 0 : -errno, &result);
  return result;
}

/*
 * adviseHugePages(arrayBuffer): asks the kernel to back the buffer's memory
 * with transparent huge pages (madvise MADV_HUGEPAGE), which the host's THP
 * mode "madvise" (Debian's default) requires. Only the 2 MiB-aligned part
 * inside the buffer is advised. Returns the bytes advised (0 when no aligned
 * 2 MiB lies inside), or -errno.
 */
static napi_value advise_huge_pages(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  size_t len = 0;
  napi_value result;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_arraybuffer_info(env, argv[0], &data, &len) != napi_ok) {
    napi_create_double(env, -EINVAL, &result);
    return result;
  }
#ifdef MADV_HUGEPAGE
  const uintptr_t huge = (uintptr_t)2 << 20;
  uintptr_t start = ((uintptr_t)data + huge - 1) & ~(huge - 1);
  uintptr_t end = ((uintptr_t)data + len) & ~(huge - 1);
  int r = end > start ? madvise((void *)start, end - start, MADV_HUGEPAGE) : 0;
  napi_create_double(env, r == 0 ? (double)(end > start ? end - start : 0) : -errno, &result);
#else
  napi_create_double(env, -EOPNOTSUPP, &result);
#endif
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"seekData", NULL, seek_data, NULL, NULL, NULL, napi_default, NULL},
    {"seekHole", NULL, seek_hole, NULL, NULL, NULL, napi_default, NULL},
    {"punchHole", NULL, do_fallocate, NULL, NULL, NULL, napi_default, (void *)(intptr_t)(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)},
    {"zeroRange", NULL, do_fallocate, NULL, NULL, NULL, napi_default, (void *)(intptr_t)(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)},
    {"allocate", NULL, do_fallocate, NULL, NULL, NULL, napi_default, (void *)(intptr_t)FALLOC_FL_KEEP_SIZE},
    {"adviseHugePages", NULL, advise_huge_pages, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
