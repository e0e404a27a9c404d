// HS256 verification shared by the Node peers (node-ws.mjs, socketio.mjs): returns the string uid
// claim of a valid token, or null.
import { createHmac, timingSafeEqual } from "node:crypto";

export function verifyUid(token, secret) {
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
    const uid = JSON.parse(Buffer.from(parts[1], "base64url").toString()).uid;
    return typeof uid === "string" && uid !== "" ? uid : null;
  } catch {
    return null;
  }
}

/** Reads uid and message from the query string, or from a urlencoded POST body. */
export async function sendParams(req) {
  const url = new URL(req.url, "http://x");
  let params = url.searchParams;
  if (req.method === "POST") {
    let body = "";
    for await (const chunk of req) body += chunk;
    params = new URLSearchParams(body);
  }
  return {
    url,
    uid: params.get("uid") ?? url.searchParams.get("uid"),
    message: params.get("message") ?? "",
  };
}
