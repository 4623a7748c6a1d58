/**
 * Image formats for `img convert`: telling a file's format from its magic numbers, and reading
 * and writing qcow2.
 *
 * @module
 */

export { type DetectedFormat, detectFormat, foreignFormatMessage } from "./detect.ts";
export { type Qcow2Header } from "./qcow2.ts";
export { Qcow2Reader, type RandomAccessSource } from "./qcow2_reader.ts";
export { Qcow2Writer, type Qcow2WriterOptions, type RandomAccessSink } from "./qcow2_writer.ts";
