// HS256 verification and request parsing shared by the Node peers (node-ws.mjs, socketio.mjs).
import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * Returns the claims the peers use from a valid token: the string `uid`, and `groups` (the optional
 * array of group names joined at connect time, as in deno-pusher); null for a bad token.
 */
export function verifyToken(token, secret) {
  const parts = String(token ?? "").split(".");
  if (parts.length !== 3) return null;
  const expected = createHmac("sha256", secret).update(
    `${parts[0]}.${parts[1]}`,
  ).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    return null;
  }
  try {
    const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString());
    if (typeof claims.uid !== "string" || claims.uid === "") return null;
    const groups = Array.isArray(claims.groups)
      ? claims.groups.filter((g) => typeof g === "string" && g !== "")
      : [];
    return { uid: claims.uid, groups };
  } catch {
    return null;
  }
}

async function body(req) {
  let text = "";
  for await (const chunk of req) text += chunk;
  return text;
}

/**
 * Reads one push call: `GET|POST /send` with uid and message as query or form fields, or
 * `POST /api/broadcast` and `POST /api/groups/{group}/send` with the JSON body `{"message"}`.
 * Returns the target ({uid}, {group} or {broadcast}) and message, or null for any other route.
 */
export async function pushCall(req) {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/send") {
    const params = req.method === "POST"
      ? new URLSearchParams(await body(req))
      : url.searchParams;
    return {
      target: { uid: params.get("uid") ?? url.searchParams.get("uid") ?? "" },
      message: params.get("message") ?? "",
    };
  }
  const group = url.pathname.match(/^\/api\/groups\/([^/]+)\/send$/)?.[1];
  if (req.method === "POST" && (group || url.pathname === "/api/broadcast")) {
    let message = "";
    try {
      message = String(JSON.parse(await body(req)).message ?? "");
    } catch { /* an empty message */ }
    return {
      target: group
        ? { group: decodeURIComponent(group) }
        : { broadcast: true },
      message,
    };
  }
  return null;
}

/** Answers a push call the way deno-pusher does: 200 with the count, or 404 when nobody got it. */
export function answer(res, delivered) {
  res.statusCode = delivered ? 200 : 404;
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({ delivered, connections: delivered }));
}
