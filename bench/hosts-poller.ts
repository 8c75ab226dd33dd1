/**
 * Follows one node's resource table from inside its network namespace (its
 * API listens on that namespace's loopback): GET /v1/hosts every N ms and a
 * JSON line `{"t":…,"ids":[…]}` on stdout whenever the set of host ids
 * changes (`t` is Date.now(): the same clock as the benchmark process).
 * api.json is re-read until it answers, so the poller can start before the
 * node. Exits when its stdin closes (the benchmark went away).
 *
 *   node dist/bench/hosts-poller.js DATA_DIR INTERVAL_MS
 */
import { readFileSync } from 'node:fs'
import http from 'node:http'

const [dir, everyText] = process.argv.slice(2)
const every = Number(everyText ?? 20)
process.stdin.on('end', () => process.exit(0)).resume()
process.stdout.on('error', () => process.exit(0))

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
let api: { url: URL, token: string } | undefined

function get (): Promise<string[]> {
  return new Promise((resolve, reject) => {
    if (api == null) {
      const info = JSON.parse(readFileSync(`${dir}/api.json`, 'utf8'))
      api = { url: new URL('/v1/hosts', info.url), token: readFileSync(`${dir}/api.token`, 'utf8').trim() }
    }
    const req = http.get(api.url, { agent, headers: { authorization: `Bearer ${api.token}` }, timeout: 2000 }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        if (res.statusCode !== 200) { reject(new Error(`HTTP ${String(res.statusCode)}`)); return }
        try { resolve((JSON.parse(Buffer.concat(chunks).toString()) as Array<{ id: string }>).map(h => h.id).sort()) } catch (err) { reject(err) }
      })
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
  })
}

let last = ''
const start = Date.now()
let tick = 0
for (;;) {
  let line: Record<string, unknown>
  try {
    line = { ids: await get() }
  } catch (err: any) {
    api = undefined
    line = { error: String(err?.code ?? err?.message ?? err) }
  }
  const key = JSON.stringify(line)
  if (key !== last) {
    last = key
    process.stdout.write(JSON.stringify({ t: Date.now(), ...line }) + '\n')
  }
  // fixed cadence, not "interval after each answer"
  tick = Math.max(tick + 1, Math.floor((Date.now() - start) / every) + 1)
  await new Promise(resolve => setTimeout(resolve, Math.max(0, start + tick * every - Date.now())))
}
