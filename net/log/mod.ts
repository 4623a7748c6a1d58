/**
 * Levelled, one-line-per-event logging on pino.
 *
 * @module
 */

export {
  createLogger,
  LOG_LEVELS,
  type LoggerOptions,
  type LogLevel,
  parseLogLevel,
  type ServiceLogger,
} from "./logger.ts";
