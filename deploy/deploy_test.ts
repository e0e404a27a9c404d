/** The systemd unit: what the issue promises operators, and what systemd itself accepts. */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";

const unit = readFileSync(new URL("./deno-pusher.service", import.meta.url), "utf8");

test("the unit runs hardened, keeps state in a StateDirectory and reads secrets from a file", () => {
  for (
    const line of [
      "DynamicUser=yes",
      "ProtectSystem=strict",
      "NoNewPrivileges=yes",
      "StateDirectory=deno-pusher",
      "Environment=DATA_DIR=/var/lib/deno-pusher",
      "EnvironmentFile=/etc/deno-pusher/env",
      "Restart=on-failure",
      "KillSignal=SIGTERM",
    ]
  ) assert.match(unit, new RegExp(`^${line}$`, "m"), line);
  const nofile = Number(/^LimitNOFILE=(\d+)$/m.exec(unit)?.[1]);
  assert.ok(nofile >= 65536, "LimitNOFILE is raised");
  const stopSec = Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)?.[1]);
  assert.ok(stopSec > 10, "systemd waits longer than the default SHUTDOWN_GRACE (10 s)");
});

test("systemd-analyze verify accepts the unit", async (t) => {
  const found = await new Promise<boolean>((resolve) =>
    execFile("systemd-analyze", ["--version"], (err) => resolve(!err))
  );
  if (!found) {
    const why = "SKIP: systemd-analyze is not installed; the unit was not verified";
    if (process.env.CI === "true") assert.fail(why);
    console.warn(why);
    t.skip(why);
    return;
  }
  // verify wants ExecStart to exist: point it at this runtime, which certainly does.
  const dir = mkdtempSync(join(tmpdir(), "deno-pusher-unit-"));
  try {
    const path = join(dir, "deno-pusher.service");
    writeFileSync(path, unit.replace(/^ExecStart=.*$/m, `ExecStart=${process.execPath}`));
    const result = await new Promise<{ ok: boolean; stderr: string }>((resolve) =>
      execFile(
        "systemd-analyze",
        ["verify", path],
        (err, _out, stderr) => resolve({ ok: !err, stderr }),
      )
    );
    const problems = result.stderr.split("\n").filter((l) => l.includes("deno-pusher.service"));
    assert.ok(result.ok, result.stderr);
    assert.deepEqual(problems, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
