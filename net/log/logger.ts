/**
 * Levelled logging on pino: one JSON line per event (`time`, `level`, `name`, `msg`), to a file
 * (appended; the sheep daemon logs to `DIR/sheep.log`), a stream, or standard error. Writes are
 * synchronous, so the last lines before a crash are on disk. No pino transports: they need
 * worker threads, which the single executable does not carry.
 *
 * @module
 */

import { pino } from "pino";
import type { Logger } from "../sheep/logger.ts";

/** The levels `--log-level` accepts, most verbose first. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

export type LogLevel = typeof LOG_LEVELS[number];

/** Checks a `--log-level` value; throws a RangeError naming the accepted ones. */
export function parseLogLevel(text: string): LogLevel {
  const level = text.trim().toLowerCase();
  if ((LOG_LEVELS as readonly string[]).includes(level)) return level as LogLevel;
  throw new RangeError(`Invalid log level '${text}': use one of ${LOG_LEVELS.join(", ")}`);
}

/** Where lines go: exactly one of `file` or `stream`; standard error when neither. */
export interface LoggerOptions {
  level: LogLevel;
  /** Appends to this file, creating it (and its directory) when missing. */
  file?: string;
  /** Anything with `write(line)`: tests, or a caller's own sink. */
  stream?: { write(line: string): unknown };
  /** A `name` field on every line, e.g. "sheep". */
  name?: string;
}

/** A `Logger` that also flushes, closes and makes named children. */
export interface ServiceLogger extends Logger {
  readonly level: LogLevel;
  /** A logger writing to the same place with another `name`. */
  child(name: string): ServiceLogger;
  /** Writes out anything buffered. */
  flush(): void;
  /** Flushes and releases the file; later calls are no-ops. */
  close(): Promise<void>;
}

type Destination = ReturnType<typeof pino.destination>;

function wrap(
  instance: pino.Logger,
  level: LogLevel,
  close: () => Promise<void>,
  flush: () => void,
): ServiceLogger {
  return {
    level,
    debug: (message) => instance.debug(message),
    info: (message) => instance.info(message),
    warn: (message) => instance.warn(message),
    error: (message) => instance.error(message),
    child: (name) => wrap(instance.child({ name }), level, close, flush),
    flush,
    close,
  };
}

function endDestination(destination: Destination): Promise<void> {
  return new Promise((resolve) => {
    destination.once("close", () => resolve());
    destination.once("error", () => resolve());
    destination.end();
  });
}

/** Builds a logger; throws when `file` cannot be opened. */
export function createLogger(options: LoggerOptions): ServiceLogger {
  const level = parseLogLevel(options.level);
  let destination: Destination | undefined;
  let sink: pino.DestinationStream;
  if (options.file !== undefined) {
    destination = pino.destination({ dest: options.file, append: true, mkdir: true, sync: true });
    sink = destination;
  } else if (options.stream) {
    sink = options.stream as pino.DestinationStream;
  } else {
    destination = pino.destination({ dest: 2, sync: true });
    sink = destination;
  }
  const instance = pino({
    level,
    base: options.name === undefined ? null : { name: options.name },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  }, sink);
  let closed: Promise<void> | undefined;
  const flush = () => {
    if (destination && closed === undefined) destination.flushSync();
  };
  const close = () => {
    closed ??= (async () => {
      if (!destination) return;
      destination.flushSync();
      // Standard error stays open for the rest of the process.
      if (options.file !== undefined) await endDestination(destination);
    })();
    return closed;
  };
  return wrap(instance, level, close, flush);
}
