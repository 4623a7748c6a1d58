/**
 * The HTTP admin API, dashboard and `/metrics` of a sheep.
 *
 * `createAdminApp` builds the hono app over an `AdminService` (no sockets; tests drive it with
 * `app.request()`); `startHttpService` serves it for a sheep, on 127.0.0.1:7080 by default.
 * Bound to loopback, mutations are allowed (with `Authorization: Bearer TOKEN` when a token is
 * set) and only loopback Host names are answered. Bound anywhere else, mutating endpoints need
 * the token, and without one they answer 403: API and dashboard are read-only.
 *
 * @module
 */

export { type AdminAppOptions, createAdminApp, type Endpoint, ENDPOINTS } from "./app.ts";
export {
  type EpochRecord,
  type NodeRecovery,
  type RecoveryReport,
  type ScrubReport,
  scrubReport,
  type VdiView,
} from "../admin/views.ts";
export { type ErrorBody, errorResponse, HttpError, resultName, statusOf } from "./errors.ts";
export {
  HTTP_HOST_DEFAULT,
  HTTP_PORT_DEFAULT,
  httpPolicy,
  type HttpService,
  type HttpServiceOptions,
  isLoopback,
  startHttpService,
} from "./node_server.ts";
export { type RingLayout, ringLayout, type RingNodeLayout } from "./ring_layout.ts";
