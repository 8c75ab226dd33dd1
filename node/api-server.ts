import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { randomBytes, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { gzipSync } from 'node:zlib'
import type { AddressInfo } from 'node:net'
import { ApiError, UsageError } from './errors.js'
import { writeFileAtomic, type DataDir } from '../storage/data-dir.js'

/**
 * The node's local HTTP API, used by the CLI and the dashboard. It listens on
 * loopback by default; every request must carry the token the node keeps in
 * its data directory (mode 0600), so only users who can read that directory
 * can drive the node.
 */
export interface ApiRequest {
  params: Record<string, string>
  query: URLSearchParams
  body: unknown
  raw: IncomingMessage
  res: ServerResponse
}

/** A handler returns JSON, or `undefined` when it wrote the response itself (streams, files). */
export type ApiHandler = (req: ApiRequest) => Promise<unknown> | unknown

interface Route { method: string, parts: string[], handler: ApiHandler, public: boolean }

/** `public`: served without the token; only for literal paths whose content holds no data (the dashboard's page shell). */
export interface RouteOptions { public?: boolean }

const MAX_BODY = 1024 * 1024

export class ApiServer {
  private readonly routes: Route[] = []
  private server?: Server
  private token = ''
  url = ''

  constructor (private readonly dir: DataDir, private readonly listen: string) {}

  route (method: string, path: string, handler: ApiHandler, opts: RouteOptions = {}): void {
    this.routes.push({ method, parts: path.split('/').filter(Boolean), handler, public: opts.public === true })
  }

  async start (info: Record<string, unknown>): Promise<void> {
    this.token = await loadOrCreateToken(this.dir.apiToken)
    const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(this.listen)
    if (m == null) throw new UsageError(`--api: expected HOST:PORT, got ${this.listen}`)
    const host = m[1].replace(/^\[|\]$/g, '')
    const server = createServer((req, res) => { void this.dispatch(req, res) })
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: any) => {
        reject(err.code === 'EADDRINUSE' ? new UsageError(`--api: address ${this.listen} is already in use`) : err)
      })
      server.listen(Number(m[2]), host, () => { resolve() })
    })
    const addr = server.address() as AddressInfo
    const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
    this.url = `http://${shown}:${addr.port}`
    await writeFileAtomic(this.dir.apiInfo, JSON.stringify({ url: this.url, pid: process.pid, ...info }) + '\n', 0o600)
  }

  async stop (): Promise<void> {
    const s = this.server
    if (s == null) return
    s.closeAllConnections()
    await new Promise<void>(resolve => { s.close(() => { resolve() }) })
  }

  private authorized (req: IncomingMessage, query: URLSearchParams): boolean {
    const header = req.headers.authorization ?? ''
    const given = header.startsWith('Bearer ') ? header.slice(7) : (query.get('token') ?? '')
    const a = Buffer.from(given); const b = Buffer.from(this.token)
    return a.length === b.length && timingSafeEqual(a, b)
  }

  private async dispatch (req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://local')
      if (!this.authorized(req, url.searchParams) && !this.isPublic(req.method ?? 'GET', url.pathname)) throw new ApiError('missing or wrong API token', 401)
      const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent)
      const found = this.match(req.method ?? 'GET', parts)
      if (found == null) throw new ApiError(`no such endpoint: ${req.method} ${url.pathname}`, 404)
      const body = req.method === 'GET' ? undefined : await readBody(req)
      const out = await found.route.handler({ params: found.params, query: url.searchParams, body, raw: req, res })
      if (out === undefined) return
      const json = JSON.stringify(out)
      // a 10,000-frame job view is megabytes of repetitive JSON: gzip takes it to a few percent
      if (json.length > 16 * 1024 && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))) {
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', vary: 'accept-encoding' })
        res.end(gzipSync(json, { level: 4 }))
      } else {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(json)
      }
    } catch (err: any) {
      // an ApiError relayed from another node (a RemoteError named 'ApiError') carries no status:
      // writeHead(undefined) would throw here, outside any handler, and crash the node
      const status = err.name === 'ApiError' ? (Number.isInteger(err.status) ? err.status : 502) : (err.name === 'UsageError' || err.name === 'JobSpecError' || err.name === 'RequirementError' || err.name === 'FrameRangeError') ? 400 : 500
      if (!res.headersSent) res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: err.message, name: err.name, field: err.field }))
    }
  }

  /** Public routes are literal paths (no parameters), compared undecoded. */
  private isPublic (method: string, pathname: string): boolean {
    const path = pathname.split('/').filter(Boolean).join('/')
    return this.routes.some(r => r.public && r.method === method && r.parts.join('/') === path)
  }

  private match (method: string, parts: string[]): { route: Route, params: Record<string, string> } | undefined {
    for (const route of this.routes) {
      if (route.method !== method || route.parts.length !== parts.length) continue
      const params: Record<string, string> = {}
      if (route.parts.every((p, i) => p.startsWith(':') ? ((params[p.slice(1)] = parts[i]) !== undefined) : p === parts[i])) return { route, params }
    }
    return undefined
  }
}

async function readBody (req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += chunk.length
    if (size > MAX_BODY) throw new ApiError('request body too large', 413)
    chunks.push(chunk)
  }
  if (size === 0) return undefined
  try { return JSON.parse(Buffer.concat(chunks).toString('utf8')) } catch { throw new ApiError('request body is not valid JSON', 400) }
}

async function loadOrCreateToken (path: string): Promise<string> {
  try {
    const t = (await readFile(path, 'utf8')).trim()
    if (t.length >= 32) return t
  } catch (err: any) {
    if (err.code !== 'ENOENT') throw err
  }
  const token = randomBytes(24).toString('hex')
  await writeFileAtomic(path, token + '\n', 0o600)
  return token
}
