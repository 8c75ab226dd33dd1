import { describe, it, expect, beforeAll, afterAll, beforeEach } from 'vitest'
import { SMTPServer } from 'smtp-server'
import http from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { notifyJob, parseSmtpSettings, mailtoRecipients, mailSubject, duration, isLoopbackHost } from '../../node/notify.js'
import type { JobSummary, SmtpSettings } from '../../node/notify.js'

const summary: JobSummary = {
  id: 'job-7f3a9c',
  name: 'shot-010',
  state: 'done',
  frames: { total: 48, done: 48, failed: 0 },
  user: 'alice',
  submittedAt: '2024-05-01T10:00:00.000Z',
  finishedAt: '2024-05-01T11:02:05.000Z',
  wallSeconds: 3725,
  cpuSeconds: 14_400,
  outputsDir: '/farm/outputs/job-7f3a9c',
  hosts: ['render-01', 'render-02']
}

// ------------------------------------------------------------ fixtures

interface Received { from: string, rcpt: string[], user?: string, raw: string }
let smtp: SMTPServer
let smtpPort = 0
let mails: Received[] = []

interface Hook { path: string, headers: http.IncomingHttpHeaders, body: string }
let hooks: Hook[] = []
let web: http.Server
let webPort = 0
let deadPort = 0

async function listen (server: net.Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  return (server.address() as AddressInfo).port
}

beforeAll(async () => {
  smtp = new SMTPServer({
    authOptional: true,
    allowInsecureAuth: true, // loopback, no TLS: let the auth test log in
    disabledCommands: ['STARTTLS'],
    logger: false,
    onAuth (auth, _session, cb) {
      if (auth.username === 'farm' && auth.password === 'secret') cb(null, { user: auth.username })
      else cb(new Error('bad credentials'))
    },
    onData (stream, session, cb) {
      const chunks: Buffer[] = []
      stream.on('data', (c: Buffer) => chunks.push(c))
      stream.on('end', () => {
        const from = session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address
        mails.push({ from, rcpt: session.envelope.rcptTo.map(r => r.address), user: session.user as string | undefined, raw: Buffer.concat(chunks).toString('utf8') })
        cb()
      })
    }
  })
  smtpPort = await listen(smtp.server)

  web = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      hooks.push({ path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') })
      if (req.url === '/hang') return // never answers: the timeout must end it
      if (req.url === '/broken') { res.writeHead(500); res.end('nope'); return }
      if (req.url === '/moved') { res.writeHead(302, { location: 'http://127.0.0.1:1/' }); res.end(); return }
      res.writeHead(204); res.end()
    })
  })
  webPort = await listen(web)

  // A port that was just free: nothing listens there, connections are refused.
  const probe = net.createServer()
  deadPort = await listen(probe)
  await new Promise<void>(resolve => probe.close(() => resolve()))
})

afterAll(async () => {
  web.closeAllConnections()
  await new Promise<void>(resolve => web.close(() => resolve()))
  await new Promise<void>(resolve => smtp.close(() => resolve()))
})

beforeEach(() => { mails = []; hooks = [] })

const smtpSettings = (): SmtpSettings => ({ host: '127.0.0.1', port: smtpPort, from: 'farmesh <farm@studio.test>' })

/** Headers unfolded, body decoded if nodemailer chose quoted-printable. */
function parseMail (raw: string): { headers: Map<string, string>, body: string } {
  const split = raw.indexOf('\r\n\r\n')
  const head = raw.slice(0, split).replace(/\r\n[ \t]+/g, ' ')
  const headers = new Map<string, string>()
  for (const line of head.split('\r\n')) {
    const i = line.indexOf(':')
    headers.set(line.slice(0, i).toLowerCase(), line.slice(i + 1).trim())
  }
  let body = raw.slice(split + 4)
  if (/quoted-printable/i.test(headers.get('content-transfer-encoding') ?? '')) {
    body = body.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16)))
  }
  return { headers, body: body.replace(/\r\n/g, '\n') }
}

// ------------------------------------------------------------ notifyJob

describe('notifyJob', () => {
  it('mails, posts a webhook, and reports a dead target without stopping the others', async () => {
    const targets = [
      'mailto:alice@studio.test,bob@studio.test?subject=ignored',
      `http://127.0.0.1:${deadPort}/hook`,
      `http://127.0.0.1:${webPort}/hook`
    ]
    const results = await notifyJob(targets, summary, { smtp: smtpSettings(), timeoutMs: 5000 })

    expect(results.map(r => r.target)).toEqual(targets)
    expect(results[0]).toEqual({ target: targets[0], ok: true })
    expect(results[1].ok).toBe(false)
    expect(results[1].error).toMatch(/ECONNREFUSED/)
    expect(results[2]).toEqual({ target: targets[2], ok: true })

    // one mail to both recipients
    expect(mails).toHaveLength(1)
    const mail = mails[0]
    expect(mail.rcpt).toEqual(['alice@studio.test', 'bob@studio.test'])
    expect(mail.from).toBe('farm@studio.test')
    const { headers, body } = parseMail(mail.raw)
    expect(headers.get('subject')).toBe('[farmesh] job shot-010 done: 48/48 frames')
    expect(headers.get('to')).toContain('alice@studio.test')
    expect(headers.get('content-type')).toMatch(/^text\/plain/)
    expect(body).toContain('job-7f3a9c')
    expect(body).toContain('48/48 done, 0 failed')
    expect(body).toContain('Wall time:  1h 02m 05s')
    expect(body).toContain('render-01, render-02')
    expect(body).toContain('/farm/outputs/job-7f3a9c')

    // the webhook got the JSON summary
    expect(hooks).toHaveLength(1)
    expect(hooks[0].path).toBe('/hook')
    expect(hooks[0].headers['content-type']).toBe('application/json')
    expect(JSON.parse(hooks[0].body)).toEqual({ event: 'job.finished', job: summary })
  })

  it('names failures in the subject and gives the reason in the body', async () => {
    const failed: JobSummary = { ...summary, state: 'failed', frames: { total: 48, done: 40, failed: 8 }, reason: 'povray exited 1\non 8 frames' }
    const [r] = await notifyJob(['mailto:alice@studio.test'], failed, { smtp: smtpSettings() })
    expect(r.ok).toBe(true)
    const { headers, body } = parseMail(mails[0].raw)
    expect(headers.get('subject')).toBe('[farmesh] job shot-010 failed: 40/48 frames, 8 failed')
    expect(body).toContain('Reason:     povray exited 1 on 8 frames')
    expect(body).toContain('40/48 done, 8 failed')
  })

  it('logs in when smtp.user is set', async () => {
    const [ok] = await notifyJob(['mailto:alice@studio.test'], summary, { smtp: { ...smtpSettings(), user: 'farm', pass: 'secret' } })
    expect(ok.ok).toBe(true)
    expect(mails[0].user).toBe('farm')
    const [bad] = await notifyJob(['mailto:alice@studio.test'], summary, { smtp: { ...smtpSettings(), user: 'farm', pass: 'wrong' } })
    expect(bad.ok).toBe(false)
    expect(bad.error).toMatch(/auth|credentials|535/i)
    expect(mails).toHaveLength(1)
  })

  it('without smtp settings a mailto target fails but webhooks still go out', async () => {
    const results = await notifyJob(['mailto:alice@studio.test', `http://127.0.0.1:${webPort}/x`], summary, {})
    expect(results[0]).toEqual({ target: 'mailto:alice@studio.test', ok: false, error: 'no smtp settings in config.json' })
    expect(results[1].ok).toBe(true)
    expect(hooks).toHaveLength(1)
  })

  it('a dead mail server fails only its own target', async () => {
    const results = await notifyJob(['mailto:alice@studio.test', `http://127.0.0.1:${webPort}/x`], summary, {
      smtp: { ...smtpSettings(), port: deadPort }, timeoutMs: 5000
    })
    expect(results[0].ok).toBe(false)
    expect(results[0].error).toMatch(/ECONNREFUSED/)
    expect(results[1].ok).toBe(true)
  })

  it('treats non-2xx answers and redirects as failures', async () => {
    const results = await notifyJob([`http://127.0.0.1:${webPort}/broken`, `http://127.0.0.1:${webPort}/moved`], summary, {})
    expect(results[0]).toMatchObject({ ok: false, error: expect.stringMatching(/^HTTP 500/) })
    expect(results[1]).toMatchObject({ ok: false, error: expect.stringMatching(/^HTTP 302/) })
  })

  it('bounds a webhook that never answers by the timeout', async () => {
    const started = Date.now()
    const [r] = await notifyJob([`http://127.0.0.1:${webPort}/hang`], summary, { timeoutMs: 200 })
    expect(r).toEqual({ target: `http://127.0.0.1:${webPort}/hang`, ok: false, error: 'timed out after 200 ms' })
    expect(Date.now() - started).toBeLessThan(3000)
  })

  it('stops when the caller aborts', async () => {
    const ac = new AbortController()
    const pending = notifyJob([`http://127.0.0.1:${webPort}/hang`], summary, { signal: ac.signal, timeoutMs: 10_000 })
    setTimeout(() => ac.abort(), 50)
    const [r] = await pending
    expect(r).toMatchObject({ ok: false, error: 'aborted' })
  })

  it('refuses plain http to other hosts and unknown schemes without sending', async () => {
    const results = await notifyJob(['http://hooks.example.com/x', 'ftp://example.com/x', 'not a uri', 'mailto:'], summary, { smtp: smtpSettings() })
    expect(results.every(r => !r.ok)).toBe(true)
    expect(results[0].error).toMatch(/loopback/)
    expect(results[1].error).toMatch(/unsupported scheme ftp:/)
    expect(results[2].error).toMatch(/not a URI/)
    expect(results[3].error).toMatch(/no mail address/)
    expect(mails).toHaveLength(0)
  })
})

// ------------------------------------------------------------ helpers

describe('helpers', () => {
  it('reads mailto recipients per RFC 6068', () => {
    expect(mailtoRecipients(new URL('mailto:a@x.test,b@y.test?subject=hi'))).toEqual(['a@x.test', 'b@y.test'])
    expect(mailtoRecipients(new URL('mailto:a%40x.test?to=c@z.test&cc=ignored@z.test'))).toEqual(['a@x.test', 'c@z.test'])
    expect(() => mailtoRecipients(new URL('mailto:nobody'))).toThrow(/bad mail address/)
  })

  it('formats subjects and durations', () => {
    expect(mailSubject({ ...summary, name: 'evil\r\nBcc: x@y' })).toBe('[farmesh] job evil Bcc: x@y done: 48/48 frames')
    expect(duration(5)).toBe('5s')
    expect(duration(65)).toBe('1m 05s')
    expect(duration(3725)).toBe('1h 02m 05s')
  })

  it('knows loopback hosts', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '[::1]', '::1']) expect(isLoopbackHost(h)).toBe(true)
    for (const h of ['10.0.0.1', 'example.com', '128.0.0.1', '[::2]']) expect(isLoopbackHost(h)).toBe(false)
  })
})

// ------------------------------------------------------------ parseSmtpSettings

describe('parseSmtpSettings', () => {
  function fails (input: unknown, field: string): Error {
    let err: unknown
    try { parseSmtpSettings(input) } catch (e) { err = e }
    expect(err).toBeInstanceOf(Error)
    const e = err as Error
    expect(e.name).toBe('ConfigError')
    expect(e.message.startsWith(`${field}: `)).toBe(true)
    return e
  }

  it('accepts a full setting', () => {
    expect(parseSmtpSettings({ host: 'mail.studio.test', port: 587, secure: false, user: 'farm', pass: 'pw', from: 'Farm <farm@studio.test>' }))
      .toEqual({ host: 'mail.studio.test', port: 587, secure: false, user: 'farm', pass: 'pw', from: 'Farm <farm@studio.test>' })
  })

  it('defaults the port from secure', () => {
    expect(parseSmtpSettings({ host: 'mail', from: 'farm@studio.test' })).toEqual({ host: 'mail', port: 587, from: 'farm@studio.test' })
    expect(parseSmtpSettings({ host: 'mail', secure: true, from: 'farm@studio.test' }).port).toBe(465)
  })

  it('names the bad field', () => {
    fails('smtp://mail', 'smtp')
    fails(null, 'smtp')
    fails({ port: 25, from: 'a@b' }, 'smtp.host')
    fails({ host: '', from: 'a@b' }, 'smtp.host')
    expect(fails({ host: 'mail', port: 70000, from: 'a@b' }, 'smtp.port').message).toMatch(/65535/)
    fails({ host: 'mail', port: '25', from: 'a@b' }, 'smtp.port')
    fails({ host: 'mail', port: 25.5, from: 'a@b' }, 'smtp.port')
    fails({ host: 'mail', secure: 'yes', from: 'a@b' }, 'smtp.secure')
    fails({ host: 'mail' }, 'smtp.from')
    fails({ host: 'mail', from: 'farm' }, 'smtp.from')
    fails({ host: 'mail', from: 'a@b', pass: 'pw' }, 'smtp.pass')
    fails({ host: 'mail', from: 'a@b', user: 7 }, 'smtp.user')
    fails({ host: 'mail', from: 'a@b', tls: true }, 'smtp.tls')
  })
})
