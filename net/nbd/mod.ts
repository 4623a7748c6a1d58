/**
 * NBD export of sheepdog volumes: a server for QEMU, qemu-img/qemu-io, nbdcopy, nbdinfo, the
 * Linux nbd client and fio. The storage side implements ExportProvider / BlockExport.
 */
export { NbdServer } from "./server.ts";
export type { NbdAddress, NbdListenOptions, NbdServerOptions } from "./server.ts";
export { NbdSession } from "./session.ts";
export type { NbdTlsEvent, SessionOptions } from "./session.ts";
export { loadNbdTls, NbdTls, parsePskFile, PSK_CIPHERS } from "./tls.ts";
export type { NbdTlsCredentials, NbdTlsFiles } from "./tls.ts";
export { ExportError, nbdErrnoOf, NbdIoError } from "./export.ts";
export type { BlockExport, ExportErrorKind, ExportInfo, ExportProvider, Extent } from "./export.ts";
export { type NbdLogger, silentLogger } from "./logger.ts";
export {
  DEFAULT_LIMITS,
  MAX_REQUEST_LENGTH,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOMEM,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ESHUTDOWN,
  type NbdLimits,
  PREFERRED_BLOCK_SIZE,
} from "./constants.ts";
export * as constants from "./constants.ts";
export * as protocol from "./protocol.ts";
