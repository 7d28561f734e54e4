import type { ServerResponse } from 'node:http';
import { type Logger, type RouteHandler, sendJson } from '../../core/index.js';
import type { FrontDoorAuth } from '../auth/index.js';
import { hostnameOf, writeResponse } from '../http-server.js';
import { PAGE_HTML, PAGE_SCRIPT, PAGE_STYLE } from './page.js';
import { MAX_ROWS, type StatusSource } from './snapshot.js';

// The ingress's live status page: `/status` (HTML), `/status/page.js`, `/status/page.css` (no
// figures in any of them, served to anyone), and `/status/data` (the figures as JSON, behind the
// admin scope when auth is on), which the page polls.

export type {
  AutoscalerView,
  BackendView,
  StatusSnapshot,
  StatusSources,
  WorkerView,
} from './snapshot.js';
export { StatusSource } from './snapshot.js';
export { quantileMs, TOOL_WINDOW_MS, type ToolFigures, ToolWindow } from './tool-window.js';

/** What the status routes need. */
export interface StatusPageOptions {
  source: StatusSource;
  /** The front door's authentication, the same as `/mcp`'s. */
  auth: FrontDoorAuth;
  /** Scope `/status/data` needs when auth is on (`ingress.statusPage.scope`). */
  scope: string;
  /** Host header values accepted (`ingress.allowedHosts`): a rebound DNS name reads nothing. */
  allowedHosts: readonly string[];
  log: Logger;
}

/** Tenants and jobs a `/status/data` request lists unless it asks otherwise. */
export const DEFAULT_ROWS = 10;

/**
 * Scripts and styles only from this origin, no framing, nothing fetched but `/status/data`: a
 * tenant or tool name shown on the page cannot run as script (the page also writes text, never HTML).
 */
const PAGE_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
};

const ASSETS: Record<string, { type: string; body: string }> = {
  '/status': { type: 'text/html; charset=utf-8', body: PAGE_HTML },
  '/status/page.js': { type: 'text/javascript; charset=utf-8', body: PAGE_SCRIPT },
  '/status/page.css': { type: 'text/css; charset=utf-8', body: PAGE_STYLE },
};

/**
 * The handler of `/status` and every path under `/status/`. Refuses a Host outside
 * `allowedHosts` (403), methods other than GET and HEAD (405), unknown paths (404), and on
 * `/status/data` unknown or malformed query parameters (400), callers without a credential (401)
 * and, when auth is on, without the admin scope (403).
 */
export function createStatusRoutes(options: StatusPageOptions): RouteHandler {
  return async (req, res) => {
    const host = hostnameOf(req.headers.host);
    if (!host || !options.allowedHosts.includes(host)) {
      return sendError(
        res,
        403,
        `Host "${req.headers.host ?? ''}" is not allowed (setting ingress.allowedHosts)`,
      );
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      req.resume();
      return sendError(res, 405, `${req.method} is not served here; use GET`, { allow: 'GET, HEAD' });
    }
    const target = req.url ?? '/';
    const queryAt = target.indexOf('?');
    const path = queryAt < 0 ? target : target.slice(0, queryAt);
    const asset = ASSETS[path];
    if (asset) {
      res.writeHead(200, {
        ...PAGE_HEADERS,
        'content-type': asset.type,
        'content-length': Buffer.byteLength(asset.body),
      });
      res.end(req.method === 'HEAD' ? undefined : asset.body);
      return;
    }
    if (path !== '/status/data') {
      return sendError(
        res,
        404,
        `no route ${path.slice(0, 200)}; the status page is /status, its figures /status/data`,
      );
    }
    const rows = rowsOf(queryAt < 0 ? '' : target.slice(queryAt + 1));
    if (typeof rows === 'string') return sendError(res, 400, rows);

    // Authenticated as on /mcp: an unknown caller gets the same 401 challenge.
    const authInfo = await options.auth.authenticate(req);
    if (authInfo instanceof Response) return writeResponse(res, authInfo, {});
    const denied = options.auth.requireScope(authInfo, options.scope);
    if (denied) return writeResponse(res, denied, {});

    const snapshot = await options.source.snapshot();
    const body = JSON.stringify({
      ...snapshot,
      tenants: snapshot.tenants.slice(0, rows.tenants),
      jobs: snapshot.jobs?.slice(0, rows.jobs) ?? null,
    });
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}

/**
 * The rows `/status/data` lists, from its query: `tenants` and `jobs`, each a whole number from 0
 * to {@link MAX_ROWS} (default {@link DEFAULT_ROWS}); a message naming the problem otherwise.
 */
export function rowsOf(query: string): { tenants: number; jobs: number } | string {
  let params: URLSearchParams;
  try {
    params = new URLSearchParams(query);
  } catch {
    return 'the query string cannot be read';
  }
  const rows = { tenants: DEFAULT_ROWS, jobs: DEFAULT_ROWS };
  const seen = new Set<string>();
  for (const [name, value] of params) {
    if (name !== 'tenants' && name !== 'jobs') {
      return `unknown query parameter "${name.slice(0, 64)}"; /status/data takes tenants and jobs (0-${MAX_ROWS})`;
    }
    if (seen.has(name)) return `query parameter ${name} is given more than once`;
    seen.add(name);
    if (!/^\d{1,3}$/.test(value) || Number(value) > MAX_ROWS) {
      return `query parameter ${name} must be a whole number from 0 to ${MAX_ROWS}, got "${value.slice(0, 64)}"`;
    }
    rows[name] = Number(value);
  }
  return rows;
}

function sendError(
  res: ServerResponse,
  status: number,
  message: string,
  headers: Record<string, string> = {},
): void {
  sendJson(res, status, { error: message }, headers);
}
