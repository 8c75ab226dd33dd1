/**
 * Job-completion notifications: the patent's "e-mail on completion", plus
 * webhooks. A job's `notify` list holds `mailto:` and `https://` URIs; each
 * target is tried on its own so one dead mail server or webhook never keeps
 * the others from hearing about the job.
 */
import nodemailer from 'nodemailer'
import { isIP } from 'node:net'
import { ConfigError } from './errors.js'

export interface SmtpSettings {
  host: string
  port: number
  /** TLS from the first byte (port 465 style); otherwise STARTTLS */
  secure?: boolean
  user?: string
  pass?: string
  /** From: header, e.g. `farmesh <farm@studio.example>` */
  from: string
}

export interface JobSummary {
  id: string
  name: string
  state: 'done' | 'failed' | 'killed'
  frames: { total: number, done: number, failed: number }
  user: string
  /** ISO 8601 */
  submittedAt: string
  /** ISO 8601 */
  finishedAt: string
  wallSeconds: number
  cpuSeconds: number
  /** why a job failed or was killed */
  reason?: string
  outputsDir: string
  hosts: string[]
}

export interface NotifyOptions {
  smtp?: SmtpSettings
  signal?: AbortSignal
  /** per target; default 10 s */
  timeoutMs?: number
}

export interface NotifyResult {
  target: string
  ok: boolean
  error?: string
}

export const DEFAULT_NOTIFY_TIMEOUT_MS = 10_000

/** Sends every target in parallel; never rejects, each target gets a result. */
export async function notifyJob (targets: string[], summary: JobSummary, opts: NotifyOptions = {}): Promise<NotifyResult[]> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_NOTIFY_TIMEOUT_MS
  return await Promise.all(targets.map(async (target): Promise<NotifyResult> => {
    const signal = opts.signal == null
      ? AbortSignal.timeout(timeoutMs)
      : AbortSignal.any([opts.signal, AbortSignal.timeout(timeoutMs)])
    try {
      await sendOne(target, summary, opts.smtp, signal, timeoutMs)
      return { target, ok: true }
    } catch (err) {
      return { target, ok: false, error: describeError(err, signal, timeoutMs) }
    }
  }))
}

async function sendOne (target: string, summary: JobSummary, smtp: SmtpSettings | undefined, signal: AbortSignal, timeoutMs: number): Promise<void> {
  let url: URL
  try { url = new URL(target.trim()) } catch { throw new Error('not a URI (expected mailto: or https://)') }
  if (url.protocol === 'mailto:') {
    if (smtp == null) throw new Error('no smtp settings in config.json')
    await sendMail(mailtoRecipients(url), summary, smtp, signal, timeoutMs)
    return
  }
  if (url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname))) {
    await postWebhook(url, summary, signal)
    return
  }
  // The job spec validator already refuses these; this guards summaries built elsewhere.
  if (url.protocol === 'http:') throw new Error('plain http:// is only allowed for loopback hosts')
  throw new Error(`unsupported scheme ${url.protocol}`)
}

// ---------------------------------------------------------------- e-mail

const ADDRESS = /^[^@\s,<>"]+@[^@\s,<>"]+$/

/** RFC 6068: comma-separated addresses in the path, more in a `to=` field; other fields (subject, body) are ignored because farmesh writes its own. */
export function mailtoRecipients (url: URL): string[] {
  // The path is still percent-encoded; searchParams values are already decoded.
  const pieces: string[] = []
  for (const piece of url.pathname.split(',')) {
    try { pieces.push(decodeURIComponent(piece)) } catch { throw new Error(`bad percent-encoding in mail address "${piece}"`) }
  }
  for (const to of url.searchParams.getAll('to')) pieces.push(...to.split(','))
  const out: string[] = []
  for (const raw of pieces) {
    const addr = raw.trim()
    if (addr === '') continue
    if (!ADDRESS.test(addr)) throw new Error(`bad mail address "${addr}"`)
    if (!out.includes(addr)) out.push(addr)
  }
  if (out.length === 0) throw new Error('no mail address in mailto: target')
  return out
}

async function sendMail (to: string[], summary: JobSummary, smtp: SmtpSettings, signal: AbortSignal, timeoutMs: number): Promise<void> {
  const secure = smtp.secure === true
  const loopback = isLoopbackHost(smtp.host)
  const transport = nodemailer.createTransport({
    host: smtp.host,
    port: smtp.port,
    secure,
    // A relay on this machine needs no TLS; anywhere else a password or a
    // render report must not cross the network in clear text.
    ignoreTLS: !secure && loopback,
    requireTLS: !secure && !loopback,
    auth: smtp.user != null ? { user: smtp.user, pass: smtp.pass ?? '' } : undefined,
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs
  })
  try {
    const sending = transport.sendMail({
      from: smtp.from,
      to,
      subject: mailSubject(summary),
      text: mailBody(summary)
    })
    // nodemailer takes no AbortSignal: race it, its own socket timeouts end the connection.
    await raceAbort(sending, signal)
  } finally {
    transport.close()
  }
}

/** `[farmesh] job shot-010 done: 48/48 frames` */
export function mailSubject (s: JobSummary): string {
  let frames = `${s.frames.done}/${s.frames.total} frames`
  if (s.frames.failed > 0) frames += `, ${s.frames.failed} failed`
  return `[farmesh] job ${oneLine(s.name)} ${s.state}: ${frames}`
}

export function mailBody (s: JobSummary): string {
  const lines = [
    `Job ${oneLine(s.name)} (${s.id}) ${s.state === 'done' ? 'finished' : s.state}.`,
    ''
  ]
  if (s.reason != null && s.reason !== '') lines.push(`Reason:     ${oneLine(s.reason)}`, '')
  lines.push(
    `Frames:     ${s.frames.done}/${s.frames.total} done, ${s.frames.failed} failed`,
    `User:       ${oneLine(s.user)}`,
    `Submitted:  ${s.submittedAt}`,
    `Finished:   ${s.finishedAt}`,
    `Wall time:  ${duration(s.wallSeconds)}`,
    `CPU time:   ${duration(s.cpuSeconds)}`,
    `Outputs:    ${s.outputsDir}`,
    `Hosts:      ${s.hosts.length === 0 ? '(none)' : s.hosts.join(', ')}`,
    '',
    '-- ',
    'sent by farmesh'
  )
  return lines.join('\n') + '\n'
}

/** 3725 → "1h 02m 05s"; easier to read in a mail than raw seconds. */
export function duration (seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?'
  const t = Math.round(seconds)
  const h = Math.floor(t / 3600)
  const m = Math.floor((t % 3600) / 60)
  const sec = t % 60
  const pad = (n: number): string => String(n).padStart(2, '0')
  if (h > 0) return `${h}h ${pad(m)}m ${pad(sec)}s`
  if (m > 0) return `${m}m ${pad(sec)}s`
  return `${sec}s`
}

// Job names and reasons come from users: keep them from breaking the layout.
function oneLine (s: string): string {
  return s.replace(/[\r\n\t]+/g, ' ').trim()
}

// ---------------------------------------------------------------- webhooks

async function postWebhook (url: URL, summary: JobSummary, signal: AbortSignal): Promise<void> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'user-agent': 'farmesh' },
    body: JSON.stringify({ event: 'job.finished', job: summary }),
    signal,
    // A redirect could point a https hook at a plain-http or internal host: report it instead.
    redirect: 'manual'
  })
  // Free the socket; the hook's reply body means nothing to us.
  await res.body?.cancel().catch(() => {})
  if (res.status < 200 || res.status > 299) throw new Error(`HTTP ${res.status}${res.statusText !== '' ? ' ' + res.statusText : ''}`)
}

// ---------------------------------------------------------------- helpers

export function isLoopbackHost (host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase()
  if (h === 'localhost' || h.endsWith('.localhost')) return true
  if (isIP(h) === 4) return h.startsWith('127.')
  if (isIP(h) === 6) return h === '::1' || /^::ffff:127\./.test(h)
  return false
}

async function raceAbort<T> (p: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted()
  let onAbort = (): void => {}
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([p, aborted])
  } finally {
    signal.removeEventListener('abort', onAbort)
    p.catch(() => {}) // the loser may still reject later
  }
}

function describeError (err: unknown, signal: AbortSignal, timeoutMs: number): string {
  if (signal.aborted) {
    const reason: unknown = signal.reason
    if (reason instanceof Error && reason.name === 'TimeoutError') return `timed out after ${timeoutMs} ms`
    return 'aborted'
  }
  if (!(err instanceof Error)) return String(err)
  // fetch hides the useful part ("ECONNREFUSED 127.0.0.1:9") in `cause`.
  const cause: unknown = (err as { cause?: unknown }).cause
  if (err.message === 'fetch failed' && cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code
    return code != null && !cause.message.includes(code) ? `${code}: ${cause.message}` : cause.message
  }
  return err.message
}

// ---------------------------------------------------------------- config

const SMTP_KEYS = new Set(['host', 'port', 'secure', 'user', 'pass', 'from'])

/** Validates the `smtp` object of the node's config.json. */
export function parseSmtpSettings (value: unknown): SmtpSettings {
  const fail = (field: string, msg: string): never => { throw new ConfigError(`smtp${field === '' ? '' : '.' + field}: ${msg}`) }
  if (typeof value !== 'object' || value == null || Array.isArray(value)) return fail('', 'expected an object like {"host": "mail.example", "port": 587, "from": "farm@example"}')
  const v = value as Record<string, unknown>
  for (const key of Object.keys(v)) if (!SMTP_KEYS.has(key)) fail(key, 'unknown setting')

  const str = (field: string, required: boolean): string | undefined => {
    const x = v[field]
    if (x === undefined) return required ? fail(field, 'missing') : undefined
    if (typeof x !== 'string' || x.trim() === '') return fail(field, 'must be a non-empty string')
    return x.trim()
  }

  const host = str('host', true) as string
  if (/[\s/]/.test(host)) fail('host', `not a host name: ${JSON.stringify(host)}`)

  let secure: boolean | undefined
  if (v.secure !== undefined) {
    if (typeof v.secure !== 'boolean') fail('secure', 'must be true or false')
    secure = v.secure as boolean
  }

  let port: number
  if (v.port === undefined) port = secure === true ? 465 : 587
  else {
    if (typeof v.port !== 'number' || !Number.isInteger(v.port) || v.port < 1 || v.port > 65535) fail('port', `expected a whole number from 1 to 65535, got ${JSON.stringify(v.port)}`)
    port = v.port as number
  }

  const user = str('user', false)
  // pass may legitimately be anything, but not without a user to go with it
  let pass: string | undefined
  if (v.pass !== undefined) {
    if (typeof v.pass !== 'string') fail('pass', 'must be a string')
    if (user == null) fail('pass', 'given without smtp.user')
    pass = v.pass as string
  }

  const from = str('from', true) as string
  // Either a bare address or `Name <address>`.
  const addr = /<([^<>]+)>\s*$/.exec(from)?.[1] ?? from
  if (!ADDRESS.test(addr.trim()) || /[\r\n]/.test(from)) fail('from', `not a mail address: ${JSON.stringify(from)}`)

  const out: SmtpSettings = { host, port, from }
  if (secure !== undefined) out.secure = secure
  if (user !== undefined) out.user = user
  if (pass !== undefined) out.pass = pass
  return out
}
