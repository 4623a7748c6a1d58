import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { createLogger, parseLogLevel } from "./logger.ts";

Deno.test("createLogger() writes one JSON line per event with time, level, name and msg", () => {
  const lines: string[] = [];
  const logger = createLogger({
    level: "debug",
    name: "sheep",
    stream: { write: (l) => lines.push(l) },
  });
  logger.debug("first");
  logger.info("second\nstill second");
  logger.warn("third");
  logger.error("fourth");
  assert.equal(lines.length, 4);
  const events = lines.map((line) => {
    assert.ok(line.endsWith("\n"));
    assert.equal(line.indexOf("\n"), line.length - 1, "one line per event");
    return JSON.parse(line);
  });
  assert.deepEqual(events.map((e) => e.level), ["debug", "info", "warn", "error"]);
  assert.deepEqual(events.map((e) => e.msg), ["first", "second\nstill second", "third", "fourth"]);
  for (const event of events) {
    assert.equal(event.name, "sheep");
    assert.ok(!Number.isNaN(Date.parse(event.time)), `time is ISO: ${event.time}`);
  }
});

Deno.test("createLogger() drops events below its level", () => {
  const lines: string[] = [];
  const logger = createLogger({ level: "warn", stream: { write: (l) => lines.push(l) } });
  logger.debug("no");
  logger.info("no");
  logger.warn("yes");
  logger.error("yes");
  assert.deepEqual(lines.map((l) => JSON.parse(l).msg), ["yes", "yes"]);
  assert.equal(JSON.parse(lines[0]!).name, undefined);
});

Deno.test("createLogger() appends to a file, creating its directory", async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "sd-log-"));
  try {
    const file = path.join(dir, "sub", "sheep.log");
    const first = createLogger({ level: "info", file, name: "sheep" });
    first.info("started");
    first.child("http").warn("listening on a public address");
    await first.close();
    await first.close();
    const second = createLogger({ level: "info", file });
    second.error("restarted");
    await second.close();
    const events = (await fsp.readFile(file, "utf8")).trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(events.map((e) => [e.level, e.name, e.msg]), [
      ["info", "sheep", "started"],
      ["warn", "http", "listening on a public address"],
      ["error", undefined, "restarted"],
    ]);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

Deno.test("parseLogLevel() accepts the four levels and names them on error", () => {
  assert.equal(parseLogLevel("DEBUG"), "debug");
  assert.equal(parseLogLevel("warn"), "warn");
  assert.throws(() => parseLogLevel("verbose"), {
    name: "RangeError",
    message: "Invalid log level 'verbose': use one of debug, info, warn, error",
  });
  assert.throws(() => createLogger({ level: "trace" as "debug" }), RangeError);
});
