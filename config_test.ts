/** Configuration as an operator meets it: flags, environment, defaults, and one-line errors. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ConfigError, helpText, parseConfig, SETTINGS } from "./config.ts";

const configOf = (args: string[], env: Record<string, string> = {}) => {
  const parsed = parseConfig(args, env);
  assert.equal(parsed.kind, "config");
  return (parsed as { config: ReturnType<typeof defaults> }).config;
};
const defaults = () => {
  const parsed = parseConfig([], {});
  if (parsed.kind !== "config") throw new Error("no config");
  return parsed.config;
};

test("with nothing set, every setting has its documented default", () => {
  const config = defaults();
  assert.equal(config.port, 8181);
  assert.equal(config.host, "0.0.0.0");
  assert.equal(config.jwtSecret, undefined);
  assert.equal(config.jwtAlg, "HS256");
  assert.deepEqual(config.apiKeys, []);
  assert.equal(config.dataDir, "./data");
  assert.equal(config.messageLogger, "sqlite");
  assert.equal(config.maxConnections, "auto");
  assert.equal(config.idleTimeout, 60);
  assert.equal(config.authTimeout, 10);
});

test("flags win over the environment, which wins over defaults; empty variables are unset", () => {
  assert.equal(configOf([], { PORT: "9000" }).port, 9000);
  assert.equal(configOf(["--port", "9001"], { PORT: "9000" }).port, 9001);
  assert.equal(configOf([], { PORT: "" }).port, 8181);
  assert.deepEqual(configOf([], { API_KEYS: " a, b ,," }).apiKeys, ["a", "b"]);
  assert.deepEqual(configOf([], {}).allowedOrigins, ["*"]);
  assert.deepEqual(
    configOf(["--allowed-origins", "https://a.test, https://*.b.test"]).allowedOrigins,
    ["https://a.test", "https://*.b.test"],
  );
  assert.deepEqual(configOf([], {}).trustedProxies, []);
  assert.deepEqual(configOf([], { TRUSTED_PROXIES: "10.0.0.1,::1" }).trustedProxies, [
    "10.0.0.1",
    "::1",
  ]);
  assert.equal(configOf([], { MAX_CONNECTIONS: "100" }).maxConnections, 100);
});

test("a bad value names the setting and where it came from", () => {
  const cases: [string[], Record<string, string>, string][] = [
    [["--port", "x"], {}, 'invalid --port="x": must be a number'],
    [[], { PORT: "70000" }, 'invalid PORT="70000": Too big: expected number to be <=65535'],
    [[], { JWT_ALG: "none" }, "invalid JWT_ALG="],
    [[], { MESSAGE_LOGGER: "mysql" }, "invalid MESSAGE_LOGGER="],
    [[], { IDLE_TIMEOUT: "5000" }, "invalid IDLE_TIMEOUT="],
    [[], { MAX_CONNECTIONS: "-1" }, "invalid MAX_CONNECTIONS="],
    [["--nope"], {}, "Unknown option '--nope'"],
    [["serve"], {}, 'unexpected argument "serve"'],
  ];
  for (const [args, env, message] of cases) {
    assert.throws(() => parseConfig(args, env), (err: Error) => {
      assert.ok(err instanceof ConfigError, `${err}`);
      assert.ok(err.message.includes(message), `${err.message} should include ${message}`);
      assert.ok(!err.message.includes("\n"), "one line");
      return true;
    });
  }
});

test("--help and the README's table list every setting", () => {
  const help = helpText();
  const readme = readFileSync(new URL("./README.md", import.meta.url), "utf8");
  for (const [name, setting] of Object.entries(SETTINGS)) {
    assert.ok(help.includes(`--${name}`), `--help lacks --${name}`);
    assert.ok(help.includes(setting.env), `--help lacks ${setting.env}`);
    const row = readme.split("\n").find((l) => l.startsWith(`| \`--${name}\``));
    assert.ok(row, `README's configuration table lacks --${name}`);
    assert.ok(row.includes(`\`${setting.env}\``), `README row for --${name} lacks ${setting.env}`);
    const shown = "default" in setting ? (setting.default || "empty") : "none";
    assert.ok(row.includes(shown), `README row for --${name} lacks its default ${shown}`);
  }
  for (const alg of ["HS256", "RS512", "ES384", "EdDSA"]) assert.match(help, new RegExp(alg));
  /** The lines --help shows for one setting. */
  const valuesOf = (name: string) => help.split(`\n  --${name} `)[1].split("\n  --")[0];
  assert.match(valuesOf("jwt-alg"), /values: HS256, HS384, HS512, RS256, .*EdDSA/);
  assert.match(valuesOf("message-logger"), /values: sqlite, stdout, none/);
  assert.match(valuesOf("jwt-require-exp"), /values: true or false/);
  assert.match(valuesOf("access-log"), /values: true or false/);
  assert.match(valuesOf("max-connections"), /values: auto, or a whole number/);
  assert.equal(parseConfig(["--help"], {}).kind, "help");
  assert.equal(parseConfig(["--version"], {}).kind, "version");
});

test("a JSON config file sits between the environment and the defaults", () => {
  const files: Record<string, string> = {
    "/etc/p.json": '{"port": 9100, "host": "127.0.0.1", "api-keys": ["k1", "k2"]}',
    "/etc/bad.json": '{"port": "many"}',
    "/etc/unknown.json": '{"prot": 1}',
    "/etc/broken.json": "{",
  };
  const read = (path: string) => {
    if (!(path in files)) throw new Error(`ENOENT: ${path}`);
    return files[path];
  };
  const parse = (args: string[], env: Record<string, string> = {}) => {
    const parsed = parseConfig(args, env, read);
    if (parsed.kind !== "config") throw new Error("no config");
    return parsed.config;
  };
  const fromFile = parse(["--config", "/etc/p.json"]);
  assert.equal(fromFile.port, 9100);
  assert.equal(fromFile.host, "127.0.0.1");
  assert.deepEqual(fromFile.apiKeys, ["k1", "k2"]);
  assert.equal(fromFile.dataDir, "./data", "what the file leaves out keeps its default");
  assert.equal(parse([], { CONFIG_FILE: "/etc/p.json", PORT: "9200" }).port, 9200);
  assert.equal(parse(["--config", "/etc/p.json", "--port", "9300"], { PORT: "9200" }).port, 9300);
  const refuse = (args: string[], message: string) =>
    assert.throws(() => parseConfig(args, {}, read), (err: Error) => err.message.includes(message));
  refuse(["--config", "/etc/bad.json"], 'invalid "port" in /etc/bad.json="many": must be a number');
  refuse(["--config", "/etc/unknown.json"], 'unknown setting "prot"');
  refuse(["--config", "/etc/broken.json"], "config file /etc/broken.json:");
  refuse(["--config", "/etc/missing.json"], "ENOENT");
});

test("a secret's value never reaches a message: bad secrets, stray arguments, broken config files", () => {
  const secret = "hunter2-but-longer";
  const files: Record<string, string> = {
    "/etc/short.json": JSON.stringify({ "jwt-secret": secret }),
    "/etc/broken.json": `{"jwt-secret": ${secret}}`,
    "/etc/unterminated.json": `{"api-keys": ["${secret}`,
  };
  const read = (path: string) => files[path];
  const cases: [string[], Record<string, string>, string][] = [
    [
      [],
      { JWT_SECRET: secret },
      "invalid JWT_SECRET (value hidden, 18 characters): must be at least 32 characters; " +
      "make one with: openssl rand -hex 32",
    ],
    [["--jwt-secret", secret], {}, "invalid --jwt-secret (value hidden, 18 characters)"],
    [["--config", "/etc/short.json"], {}, '"jwt-secret" in /etc/short.json (value hidden'],
    [["--config", "/etc/broken.json"], {}, "config file /etc/broken.json: not valid JSON"],
    [["--config", "/etc/unterminated.json"], {}, "not valid JSON"],
    // A key with a space splits into two arguments; the stray one must not be echoed.
    [["--api-keys", "k1,", secret], {}, "unexpected argument"],
    [["--jwt-secret", secret, secret], {}, "unexpected argument"],
  ];
  for (const [args, env, message] of cases) {
    assert.throws(() => parseConfig(args, env, read), (err: Error) => {
      assert.ok(err instanceof ConfigError, `${err}`);
      assert.ok(err.message.includes(message), `${err.message} should include ${message}`);
      assert.ok(!err.message.includes(secret), `${err.message} shows the secret`);
      assert.ok(!err.message.includes("hunter2"), `${err.message} shows part of the secret`);
      return true;
    });
  }
});
