/**
 * The origin allowlist for /ws. A browser always sends Origin on a WebSocket handshake, so a page
 * on another site cannot open a socket to this server with the user's ambient credentials when
 * its origin is not listed. Clients that are not browsers send no Origin and are not affected:
 * their token is their credential.
 */

/**
 * Whether `origin` is allowed by `patterns`: `*` allows any; `https://app.example.com` allows
 * exactly that origin; `https://*.example.com` allows any subdomain of example.com (at any depth)
 * over https, not example.com itself. Comparison ignores case; ports must match.
 */
export function originAllowed(origin: string | undefined, patterns: string[]): boolean {
  if (origin === undefined || patterns.includes("*")) return true;
  const o = origin.toLowerCase();
  return patterns.some((pattern) => {
    const p = pattern.toLowerCase().replace(/\/+$/, "");
    const star = p.indexOf("://*.");
    if (star < 0) return o === p;
    const scheme = p.slice(0, star + 3);
    const suffix = p.slice(star + 4); // ".example.com[:port]"
    return o.startsWith(scheme) && o.endsWith(suffix) && o.length > scheme.length + suffix.length;
  });
}
