/**
 * What counts as this machine at the HTTP edge. When the gateway is bound to a loopback address,
 * a page served from this machine (any port) may call it: its Origin is accepted without being
 * listed in TOLLGATE_ALLOWED_ORIGINS. A page from anywhere else is still refused, and so is a
 * DNS-rebinding page, whose Origin names its own host even when that host resolves to 127.0.0.1.
 */

/** Whether `host` only accepts connections from this machine: localhost, 127.0.0.0/8 or ::1. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

const LOOPBACK_ORIGIN_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/** Whether an Origin header names this machine: http(s)://localhost, 127.0.0.1 or [::1], any port. */
export function isLoopbackOrigin(origin: string): boolean {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  return (url.protocol === 'http:' || url.protocol === 'https:') && LOOPBACK_ORIGIN_HOSTS.has(url.hostname) && url.origin === origin.toLowerCase();
}
