import { createHash } from 'node:crypto'
import { gzipSync } from 'node:zlib'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ApiServer } from '../api-server.js'
import type { FarmNode } from '../farm-node.js'
import { DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS } from './assets.js'

/**
 * The web dashboard on the node's local API: `GET /` (also `/ui`) is the
 * page, `/ui/app.js` and `/ui/app.css` its script and style. These are
 * served without the API token because they hold no farm data; the page
 * takes the token from its URL once (`#token=…`, as `farmesh dashboard`
 * prints it, or `?token=`), keeps it in the tab's sessionStorage, and sends
 * it with every API call and as `?token=` on the event stream.
 */
interface Asset { type: string, body: Buffer, gzip: Buffer, etag: string }

function asset (type: string, text: string): Asset {
  const body = Buffer.from(text, 'utf8')
  return { type, body, gzip: gzipSync(body, { level: 9 }), etag: '"' + createHash('sha256').update(body).digest('base64url').slice(0, 22) + '"' }
}

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache'
}

function serve (a: Asset, req: IncomingMessage, res: ServerResponse): undefined {
  if (req.headers['if-none-match'] === a.etag) {
    res.writeHead(304, { etag: a.etag, ...SECURITY_HEADERS })
    res.end()
    return undefined
  }
  const gz = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))
  const body = gz ? a.gzip : a.body
  res.writeHead(200, {
    'content-type': a.type, 'content-length': body.length, etag: a.etag, vary: 'accept-encoding', ...(gz ? { 'content-encoding': 'gzip' } : {}), ...SECURITY_HEADERS
  })
  res.end(body)
  return undefined
}

export function registerDashboard (api: ApiServer, _node: FarmNode): void {
  const html = asset('text/html; charset=utf-8', DASHBOARD_HTML)
  const js = asset('text/javascript; charset=utf-8', DASHBOARD_JS)
  const css = asset('text/css; charset=utf-8', DASHBOARD_CSS)
  const pub = { public: true }
  api.route('GET', '/', ({ raw, res }) => serve(html, raw, res), pub)
  api.route('GET', '/ui', ({ raw, res }) => serve(html, raw, res), pub)
  api.route('GET', '/ui/app.js', ({ raw, res }) => serve(js, raw, res), pub)
  api.route('GET', '/ui/app.css', ({ raw, res }) => serve(css, raw, res), pub)
}
