/** Stream names are the message log's target names, so a log row and a stream name agree. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { targetKey } from "../message/message.ts";
import { ALL_STREAM, groupStream, uidStream } from "./stream.ts";

test("a uid's, a group's and everyone's streams are named as the message log names the target", () => {
  assert.equal(uidStream("alice"), targetKey({ uid: "alice" }));
  assert.equal(groupStream("chat"), targetKey({ group: "chat" }));
  assert.equal(ALL_STREAM, targetKey({ all: true }));
});
