/**
 * Goal: the data path keeps its promises under faults: flushed writes survive, reads return only
 * what was written, copies converge once the faults stop.
 * Method: seeded runs of the data-path simulation (data_path.ts), each deterministic, and a
 * deliberately broken product per checker to show that checker fires.
 * `SIM_SEED=N` replays one seed and prints its schedule; `SIM_SEEDS=K` runs K seeds.
 */

import { runDataPathSeed, SimFailure } from "./data_path.ts";

function envInt(name: string): number | null {
  const value = Deno.env.get(name);
  if (value === undefined || value === "") return null;
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed)) throw new TypeError(`${name} must be an integer`);
  return parsed;
}

Deno.test("data-path simulation: seeded workloads under faults", async () => {
  const only = envInt("SIM_SEED");
  const count = envInt("SIM_SEEDS") ?? 200;
  const first = envInt("SIM_SEED_FIRST") ?? 1;
  const seeds = only !== null ? [only] : Array.from({ length: count }, (_, i) => first + i);
  const started = performance.now();
  const survey = Deno.env.get("SIM_SURVEY") === "1";
  for (const seed of seeds) {
    try {
      const summary = await runDataPathSeed({ seed });
      if (only !== null) console.log(summary.log.join("\n"));
    } catch (error) {
      if (survey) {
        console.log(
          `seed ${seed}: ${(error as Error).message.split("\n").slice(0, 3).join(" | ")}`,
        );
        continue;
      }
      const log = error instanceof SimFailure ? `\n${error.log.join("\n")}` : "";
      const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      throw new Error(`seed ${seed} failed: ${text}${log}\nreplay with SIM_SEED=${seed}`);
    }
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(`${seeds.length} seeds, ${seconds} s`);
});
