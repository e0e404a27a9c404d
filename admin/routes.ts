/**
 * The admin page at GET /admin (admin/page.ts): served to anyone, because it holds no data. What it
 * shows it reads from /api and /metrics, behind the same door as every backend (apikey.ts): one of
 * API_KEYS, typed into the page, or, while API_KEYS is empty, a browser on loopback.
 *
 * The page keeps that key in sessionStorage, so a script injected into it could read it: the
 * Content-Security-Policy below lets only the page's own style and script run (by their SHA-256),
 * lets them call this origin only, and keeps the page out of other sites' frames.
 */
import { createHash } from "node:crypto";
import type { Hono } from "hono";
import type { RuntimeEnv } from "../runtime/contract.ts";
import { ADMIN_PAGE, ADMIN_SCRIPT, ADMIN_STYLE } from "./page.ts";

/** A CSP source for inline text: its SHA-256, in base64. */
const hashOf = (text: string) => `'sha256-${createHash("sha256").update(text).digest("base64")}'`;

/** The page's policy: its own style and script, calls to this origin, no frames, no forms away. */
const POLICY = [
  "default-src 'none'",
  `script-src ${hashOf(ADMIN_SCRIPT)}`,
  `style-src ${hashOf(ADMIN_STYLE)}`,
  "connect-src 'self'",
  "img-src data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const HEADERS = {
  "content-security-policy": POLICY,
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

/** Adds GET /admin (and /admin/, which goes there) to `app`. */
export function adminRoutes(app: Hono<{ Bindings: RuntimeEnv }>): void {
  app.get("/admin", (c) => c.html(ADMIN_PAGE, 200, HEADERS));
  app.get("/admin/", (c) => c.redirect("/admin"));
}
