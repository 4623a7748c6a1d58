/** The logging shape the NBD server uses; `console` satisfies it. */
export interface NbdLogger {
  debug(message: string, data?: Record<string, unknown>): void;
  info(message: string, data?: Record<string, unknown>): void;
  warn(message: string, data?: Record<string, unknown>): void;
  error(message: string, data?: Record<string, unknown>): void;
}

const nothing = (): void => {};

/** Discards everything (the default). */
export const silentLogger: NbdLogger = Object.freeze({
  debug: nothing,
  info: nothing,
  warn: nothing,
  error: nothing,
});
