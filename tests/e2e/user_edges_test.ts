// Goal: the edges a new user meets on the command line (issue 10, parts 3 and 5) answer in one
// line of the product's words: a closed stdout ends quietly; unknown options, directories and
// pipes as images, sizes, names and tags that could not be addressed again, duplicate tags,
// global flags before the subcommand, and VDI arguments in every documented form.
// Method: one daemonised sheep on a loopback port; every command runs the built ./sheepdog.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as path from "node:path";
import { tempDir } from "../harness.ts";
import { EXECUTABLE, freePort, requireExecutable, sheepdog, stopDaemon } from "./cli.ts";

/** Runs a shell pipeline (for `| head`), returning its stderr. */
function shell(
  command: string,
  env: Record<string, string>,
): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      "/bin/sh",
      ["-c", command],
      { env: { PATH: "/usr/bin:/bin", ...env } },
      (error, _out, stderr) => {
        resolve({ code: error ? Number(error.code ?? 1) : 0, stderr });
      },
    );
  });
}

Deno.test("e2e: one clear line for every edge a new user meets", async (t) => {
  requireExecutable();
  const dir = await tempDir("sd-e2e-edges-");
  const port = await freePort();
  const env = { SHEEPDOG_CLUSTER: `127.0.0.1:${port}` };
  const ok = async (args: string[]) => {
    const result = await sheepdog(args, env);
    assert.equal(result.code, 0, `sheepdog ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  };
  const fails = async (args: string[], code: number, pattern: RegExp) => {
    const result = await sheepdog(args, env);
    assert.equal(result.code, code, `sheepdog ${args.join(" ")}: ${result.stderr}`);
    assert.match(result.stderr.split("\n")[0]!, pattern);
    assert.doesNotMatch(result.stderr, /\n\s+at |ENOENT|EISDIR|To specify a positional/);
  };
  const vdis = async () =>
    JSON.parse(await ok(["shepherd", "info", "-t", "vdi", "--json"])) as { name: string }[];
  await ok([
    ...["sheep", path.join(dir, "sd"), "--host", "127.0.0.1", "--port", String(port)],
    ...["--multicast", "off", "--no-http", "--no-nbd"],
  ]);
  try {
    await ok(["shepherd", "mkfs", "--copies=1"]);
    await ok(["img", "create", "disk", "1G"]);
    await t.step("a closed stdout ends the command quietly", async () => {
      for (let i = 0; i < 6; i++) {
        for (
          const command of [
            "shepherd info -t vdi",
            "img info disk",
            "img --help",
            "shepherd --help",
          ]
        ) {
          const result = await shell(`${EXECUTABLE} ${command} | head -c 1 >/dev/null`, env);
          assert.equal(result.stderr, "", `${command}: ${result.stderr}`);
        }
      }
    });
    await t.step("options and arguments in the product's words", async () => {
      await fails(["img", "create", "--size", "1G", "x"], 2, /^img: Unknown option --size$/);
      await fails(["img", "info", "disk", "--cluster"], 2, /^img: Option --cluster needs a value$/);
      await fails(
        ["shepherd", "info", "-t", "vdi", "--json=yes"],
        2,
        /Option --json takes no value/,
      );
      await fails(
        ["img", "create", "Huge", "5T"],
        1,
        /^img: Invalid VDI size 5 TB: it must be between 1 B and 4 TB$/,
      );
    });
    await t.step(
      "images that are directories or pipes are refused, and nothing is created",
      async () => {
        await fails(
          ["img", "convert", dir, "fromdir"],
          1,
          /^img: Cannot read '.*': it is a directory$/,
        );
        await fails(["img", "convert", "/dev/stdin", "frompipe"], 1, /it is a pipe or a device/);
        await fails(
          ["img", "convert", path.join(dir, "none.raw"), "x"],
          1,
          /Cannot (open|read) '.*none\.raw': no such file/,
        );
        const names = (await vdis()).map((v) => v.name);
        assert.ok(!names.includes("fromdir") && !names.includes("frompipe"), names.join(","));
      },
    );
    await t.step("names that could not be addressed again are refused at creation", async () => {
      for (
        const [name, why] of [
          ["a:b", /':' is not allowed/],
          ["a/b", /'\/' is not allowed/],
          ["a#b", /'#'/],
          ["a\nb", /control character U\+000a/],
          ["a\tb", /U\+0009/],
          [" lead", /begin or end with a space/],
        ] as const
      ) {
        await fails(["img", "create", name, "1G"], 1, why);
      }
      await ok(["img", "create", "Alice's Disk (2) — ünïcode", "1G"]);
      await ok(["img", "info", "Alice's Disk (2) — ünïcode"]);
    });
    await t.step(
      "tags are unique per VDI, not empty, and the id printed is the id stored",
      async () => {
        assert.match(await ok(["img", "snapshot", "-c", "v1", "disk"]), /snap id 1\)/);
        await fails(
          ["img", "snapshot", "-c", "v1", "disk"],
          1,
          /has a snapshot tagged 'v1' already/,
        );
        await fails(["img", "snapshot", "-c", "", "disk"], 2, /needs a tag/);
        await fails(["img", "snapshot", "-c", "42", "disk"], 1, /cannot be all digits/);
        const second = await ok(["img", "snapshot", "-c", "v2", "disk"]);
        const id = /snap id (\d+)\)/.exec(second)![1];
        assert.match(
          await ok(["img", "snapshot", "-l", "disk"]),
          new RegExp(`^${id}\\s+v2\\s`, "m"),
        );
      },
    );
    await t.step("global flags before the subcommand, VDI arguments in every form", async () => {
      const cluster = `127.0.0.1:${port}`;
      assert.match(await ok(["shepherd", "--cluster", cluster, "info", "-t", "vdi"]), /disk/);
      assert.match(await ok(["shepherd", `--cluster=${cluster}`, "info", "-t", "vdi"]), /disk/);
      for (const form of ["sheepdog:gone1", `sheepdog://${cluster}/gone2`]) {
        const name = form.includes("gone1") ? "gone1" : "gone2";
        await ok(["img", "create", name, "1G"]);
        assert.match(await ok(["shepherd", "vdi", "delete", form]), new RegExp(`Deleted ${name}`));
      }
      await ok(["shepherd", "--cluster", cluster, "vdi", "delete", "disk:v1"]);
      assert.ok(!(await vdis()).some((v) => v.name === "gone1" || v.name === "gone2"));
    });
  } finally {
    await stopDaemon(path.join(dir, "sd")).catch(() => undefined);
  }
});
