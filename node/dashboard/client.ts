/**
 * The dashboard's browser code (the patent's "manager applications",
 * FIGURE 7): one page with tabs for hosts, running frames, queues and one
 * job's frame grid, kept live by the node's event stream.
 *
 * This function never runs in Node. `assets.ts` serves its source text as
 * the page's script, so it must be self-contained: no imports, and no
 * reference to anything outside its own body. It is TypeScript so that tsc
 * checks it against the DOM types; tsc (target ES2022) emits it unchanged
 * apart from the types.
 */
export function dashboardApp (): void {
  type TaskState = 'queued' | 'running' | 'done' | 'failed'
  type Tab = 'queues' | 'running' | 'hosts' | 'job' | 'federation'
  interface HostSummary {
    id: string, hostname: string, site: string, slots: { total: number, busy: number }
    renderers: Array<{ name: string, version: string }>, licenses: string[], scheduler: boolean, term: number
    render: boolean, draining: boolean, addresses: string[], lastSeenMsAgo: number, uptimeSec: number
  }
  interface HostDetail extends HostSummary {
    fingerprint: {
      os: { type: string, version: string, release: string }
      cpu: { count: number, model: string, speedMHz: number }
      ram: { total: number, free: number }
      gpus: Array<{ vendor: string, model: string }>
      machine: { model: string, vendor: string }
    }
  }
  interface Counts { total: number, done: number, running: number, failed: number, queued: number }
  interface JobSummary {
    id: string, name: string, state: string, held: boolean, priority: number, user: string, group: string, origin: string
    renderer: string, frames: Counts, submittedAt: number, startedAt?: number, finishedAt?: number, reason?: string
    cpuSeconds: number, hosts: string[], queuePosition: number | null
  }
  interface TaskStats { exitCode: number | null, cpuSeconds: number, peakRssBytes: number, wallSeconds: number }
  interface TaskView {
    index: number, frames: number[], state: TaskState, host: string | null, attempts: number, progress: number
    errors: string[], logTail: string[], stats: TaskStats | null, dispatchedAt: number | null, startedAt: number | null
    finishedAt: number | null, outputs: string[]
  }
  interface JobView extends Omit<JobSummary, 'frames' | 'queuePosition'> {
    spec: { outputPattern?: string, frames: string }, term: number
    frames: Array<{ frame: number }>, tasks: TaskView[]
  }
  interface Status { peerId: string, site: string, hostname: string, scheduler: string | null, term: number, hosts: number, federation?: unknown }
  type TaskEvent = { index: number, frames: number[], state: TaskState, host: string | null, attempts: number }
  type Child = Node | string | null | undefined | false

  // ---------------------------------------------------------------- helpers

  function h<K extends keyof HTMLElementTagNameMap> (tag: K, attrs?: Record<string, unknown> | null, ...children: Child[]): HTMLElementTagNameMap[K] {
    const el = document.createElement(tag)
    for (const [k, v] of Object.entries(attrs ?? {})) {
      if (v == null || v === false) continue
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v as EventListener)
      else if (k === 'class') el.className = String(v)
      else if (k === 'text') el.textContent = String(v)
      else el.setAttribute(k, v === true ? '' : String(v))
    }
    for (const c of children) if (c != null && c !== false) el.append(c)
    return el
  }
  const $ = (sel: string): HTMLElement => document.querySelector(sel) as HTMLElement
  function setText (el: Element, text: string): void { if (el.textContent !== text) el.textContent = text }

  function shortId (id: string | null | undefined): string { return id == null ? '—' : id.length > 12 ? '…' + id.slice(-8) : id }
  function bytes (n: number): string {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
    let i = 0
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++ }
    return n.toFixed(i === 0 ? 0 : 1) + ' ' + units[i]
  }
  function duration (sec: number): string {
    if (!Number.isFinite(sec) || sec < 0) return '—'
    if (sec < 60) return sec.toFixed(sec < 10 ? 1 : 0) + ' s'
    const m = Math.floor(sec / 60); const s = Math.round(sec % 60)
    if (m < 60) return m + ' min ' + String(s).padStart(2, '0') + ' s'
    return Math.floor(m / 60) + ' h ' + String(m % 60).padStart(2, '0') + ' min'
  }
  function ago (ms: number | null | undefined): string { return ms == null ? '—' : duration((Date.now() - ms) / 1000) + ' ago' }
  function clock (ms: number | null | undefined): string { return ms == null ? '—' : new Date(ms).toLocaleTimeString() }
  function frameLabel (frames: number[]): string {
    if (frames.length === 1) return String(frames[0])
    return frames[0] + '–' + frames[frames.length - 1]
  }
  function badge (text: string, kind: string): HTMLElement { return h('span', { class: 'badge ' + kind, text }) }

  /** at most one run per `ms`, never two at once, and always a run after the last call */
  function throttled (fn: () => Promise<void> | void, ms: number | (() => number)): () => void {
    let last = 0; let timer: number | undefined; let running = false; let again = false
    const run = async (): Promise<void> => {
      timer = undefined
      if (running) { again = true; return }
      running = true; last = Date.now()
      try { await fn() } catch (err) { if (!(err instanceof AuthError)) console.warn(err) } finally {
        running = false
        if (again) { again = false; schedule() }
      }
    }
    const schedule = (): void => {
      if (timer !== undefined) return
      if (running) { again = true; return }
      timer = window.setTimeout(() => { void run() }, Math.max(0, last + (typeof ms === 'number' ? ms : ms()) - Date.now()))
    }
    return schedule
  }

  let toastTimer = 0
  function toast (text: string, error = false): void {
    const el = $('#toast')
    el.textContent = text
    el.className = error ? 'show error' : 'show'
    window.clearTimeout(toastTimer)
    toastTimer = window.setTimeout(() => { el.className = '' }, error ? 6000 : 2500)
  }

  /** A button that asks to be clicked again to confirm (no modal dialogs). */
  function confirmButton (label: string, confirmLabel: string, cls: string, action: () => Promise<void>): HTMLButtonElement {
    const b = h('button', { class: cls, text: label, type: 'button' })
    let armed = 0
    b.addEventListener('click', () => {
      if (armed === 0) {
        b.textContent = confirmLabel; b.classList.add('armed')
        armed = window.setTimeout(() => { armed = 0; b.textContent = label; b.classList.remove('armed') }, 4000)
        return
      }
      window.clearTimeout(armed); armed = 0; b.textContent = label; b.classList.remove('armed')
      void act(b, action)
    })
    return b
  }
  async function act (b: HTMLButtonElement | null, action: () => Promise<void>): Promise<void> {
    if (b != null) b.disabled = true
    try { await action() } catch (err: any) { if (!(err instanceof AuthError)) toast(err.message, true) } finally { if (b != null) b.disabled = false }
  }

  // ------------------------------------------------------------ API access

  class AuthError extends Error {}
  const TOKEN_KEY = 'farmesh.token'
  let token = sessionStorage.getItem(TOKEN_KEY) ?? ''
  let defaultRoute = '#/queues'
  {
    // the token arrives once, in the fragment (#token=…&/job/ID) or the query (?token=…); it is then kept for this tab only
    const hash = location.hash.slice(1)
    const m = /(?:^|&)token=([^&]*)/.exec(hash)
    const q = new URLSearchParams(location.search)
    if (m != null) {
      token = decodeURIComponent(m[1])
      const rest = hash.replace(m[0], '').replace(/^&/, '')
      if (rest !== '') defaultRoute = '#' + rest
    } else if (q.get('token') != null) token = q.get('token') ?? ''
    if (m != null || q.has('token')) {
      sessionStorage.setItem(TOKEN_KEY, token)
      history.replaceState(null, '', location.pathname + (m != null ? defaultRoute : location.hash))
    }
  }

  async function api<T = any> (method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(path, {
      method,
      headers: { authorization: 'Bearer ' + token, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined
    })
    if (res.status === 401) { showLogin('The node refused this token.'); throw new AuthError('unauthorized') }
    const text = await res.text()
    let data: any
    try { data = text === '' ? undefined : JSON.parse(text) } catch { data = { error: text } }
    if (!res.ok) throw new Error(data?.error ?? 'HTTP ' + res.status)
    return data as T
  }

  // ------------------------------------------------------------------ state

  let status: Status | null = null
  const hosts = new Map<string, HostSummary>()
  let hostsFetchedAt = 0
  const details = new Map<string, HostDetail>()
  const detailFetchedAt = new Map<string, number>()
  let jobs: JobSummary[] = []
  let tab: Tab = 'queues'

  /** hostnames shared by several hosts (several nodes on one machine): those get an id suffix */
  let sharedNames = new Set<string>()
  function hostName (id: string | null | undefined): string {
    if (id == null) return '—'
    const x = hosts.get(id)
    if (x == null) return shortId(id)
    return sharedNames.has(x.hostname) ? x.hostname + ' …' + id.slice(-4) : x.hostname
  }

  // ------------------------------------------------------------ page shell

  function showLogin (why: string): void {
    sessionStorage.removeItem(TOKEN_KEY)
    const box = $('#login')
    box.hidden = false
    setText($('#login-why'), why)
  }

  function setLive (on: boolean): void {
    const el = $('#live')
    el.className = on ? 'live on' : 'live off'
    setText(el, on ? 'live' : 'reconnecting…')
  }

  function renderStatus (): void {
    if (status == null) return
    setText($('#site'), status.site)
    setText($('#self'), hosts.has(status.peerId) ? hostName(status.peerId) : status.hostname)
    const sched = status.scheduler
    setText($('#sched'), sched == null ? 'no scheduler' : 'scheduler ' + (sched === status.peerId ? 'this node' : hostName(sched)) + ' · term ' + status.term)
    $('#tab-federation').hidden = status.federation == null
  }

  const loadStatus = throttled(async () => { status = await api<Status>('GET', '/v1/status'); renderStatus() }, 2000)

  const loadHosts = throttled(async () => {
    const list = await api<HostSummary[]>('GET', '/v1/hosts')
    hostsFetchedAt = Date.now()
    hosts.clear()
    for (const x of list) hosts.set(x.id, x)
    const names = list.map(x => x.hostname)
    sharedNames = new Set(names.filter((n, i) => names.indexOf(n) !== i))
    if (status != null) {
      const sched = list.find(x => x.scheduler)
      if (sched != null) { status.scheduler = sched.id; status.term = sched.term }
      renderStatus()
    }
    const stale = list.filter(x => (detailFetchedAt.get(x.id) ?? 0) < Date.now() - 60_000)
    for (const x of stale) detailFetchedAt.set(x.id, Date.now())
    await Promise.all(stale.map(async x => {
      try { details.set(x.id, await api<HostDetail>('GET', '/v1/hosts/' + encodeURIComponent(x.id))) } catch {}
    }))
    if (tab === 'hosts') renderHosts()
  }, 1000)

  const loadJobs = throttled(async () => {
    jobs = await api<JobSummary[]>('GET', '/v1/jobs')
    if (tab === 'queues') renderQueues()
  }, 1000)

  // ----------------------------------------------------- keyed table rows

  /** Rows keyed by id: created once, updated in place, moved only when the order changes. */
  function syncRows<T, R extends { tr: HTMLTableRowElement }> (tbody: HTMLElement, rows: Map<string, R>, items: T[], key: (x: T) => string, create: (x: T) => R, update: (r: R, x: T) => void): void {
    const seen = new Set<string>()
    const order: HTMLTableRowElement[] = []
    for (const item of items) {
      const k = key(item)
      seen.add(k)
      let r = rows.get(k)
      if (r == null) { r = create(item); r.tr.dataset.key = k; rows.set(k, r) }
      update(r, item)
      order.push(r.tr)
    }
    for (const [k, r] of rows) if (!seen.has(k)) { r.tr.remove(); rows.delete(k) }
    const current = Array.from(tbody.children)
    if (current.length !== order.length || order.some((tr, i) => current[i] !== tr)) {
      for (const tr of order) tbody.append(tr)
    }
  }

  function bar (fraction: number, cls = ''): HTMLElement {
    const fill = h('span', { class: 'fill' })
    fill.style.width = Math.round(Math.max(0, Math.min(1, fraction)) * 100) + '%'
    return h('span', { class: 'bar ' + cls }, fill)
  }
  function setBar (el: HTMLElement, fraction: number): void {
    const w = Math.round(Math.max(0, Math.min(1, fraction)) * 1000) / 10 + '%'
    const fill = el.firstElementChild as HTMLElement
    if (fill.style.width !== w) fill.style.width = w
  }

  // ------------------------------------------------------------------ hosts

  interface HostRow { tr: HTMLTableRowElement, name: HTMLElement, badges: HTMLElement, id: HTMLElement, sys: HTMLElement, rend: HTMLElement, lic: HTMLElement, slotsBar: HTMLElement, slotsText: HTMLElement, state: HTMLElement, health: HTMLElement, drain: HTMLButtonElement, stop: HTMLButtonElement, hostId: string }
  const hostRows = new Map<string, HostRow>()

  function renderHosts (): void {
    const list = [...hosts.values()].sort((a, b) => a.hostname.localeCompare(b.hostname) || a.id.localeCompare(b.id))
    setText($('#hosts-count'), list.length + (list.length === 1 ? ' host' : ' hosts') + ' · ' + list.reduce((n, x) => n + x.slots.busy, 0) + '/' + list.reduce((n, x) => n + x.slots.total, 0) + ' slots busy')
    syncRows($('#hosts-body'), hostRows, list, x => x.id, (x) => {
      const r: HostRow = {
        tr: h('tr'), name: h('strong'), badges: h('div', { class: 'badges block' }), id: h('div', { class: 'muted mono small' }), sys: h('td', { class: 'sys' }),
        rend: h('td'), lic: h('td'), slotsBar: bar(0, 'slots'), slotsText: h('span', { class: 'small' }), state: h('td'), health: h('td', { class: 'health' }),
        drain: h('button', { type: 'button', class: 'btn' }),
        stop: confirmButton('Stop', 'Stop node?', 'btn danger', async () => { await api('POST', '/v1/hosts/' + encodeURIComponent(x.id) + '/stop'); toast('stopping ' + hostName(x.id)) }),
        hostId: x.id
      }
      r.drain.addEventListener('click', () => {
        const h0 = hosts.get(r.hostId)
        const action = h0?.draining === true ? 'undrain' : 'drain'
        void act(r.drain, async () => { await api('POST', '/v1/hosts/' + encodeURIComponent(r.hostId) + '/' + action); toast(hostName(r.hostId) + (action === 'drain' ? ' draining: it finishes its frames and takes no more' : ' takes frames again')); loadHosts() })
      })
      r.tr.append(h('td', { class: 'host-cell' }, r.name, r.id, r.badges), r.sys, r.rend, r.lic, h('td', { class: 'slots-cell' }, r.slotsBar, r.slotsText), r.state, r.health, h('td', { class: 'actions' }, r.drain, r.stop))
      return r
    }, (r, x) => {
      setText(r.name, x.hostname)
      r.badges.replaceChildren(...[x.scheduler ? badge('scheduler · term ' + x.term, 'sched') : null, x.id === status?.peerId ? badge('this node', 'self') : null].filter((b): b is HTMLElement => b != null))
      setText(r.id, shortId(x.id)); r.id.title = x.id
      const d = details.get(x.id)?.fingerprint
      if (d != null) {
        const lines = [
          [d.os.type, d.os.version].filter(Boolean).join(' '),
          d.cpu.count + ' × ' + d.cpu.model + (d.cpu.speedMHz > 0 ? ' @ ' + (d.cpu.speedMHz / 1000).toFixed(1) + ' GHz' : ''),
          bytes(d.ram.total) + ' RAM' + (d.gpus.length > 0 ? ' · ' + d.gpus.map(g => g.model).join(', ') : '')
        ]
        if (r.sys.textContent !== lines.join('')) r.sys.replaceChildren(...lines.map((l, i) => h('div', { class: i === 0 ? '' : 'muted small', text: l })))
      } else setText(r.sys, '…')
      const rk = x.renderers.map(v => v.name + '@' + v.version).join(',')
      if (r.rend.dataset.k !== rk) { r.rend.dataset.k = rk; r.rend.replaceChildren(...x.renderers.map(v => h('span', { class: 'chip', text: v.name + ' ' + v.version }))) }
      const lk = x.licenses.join(',')
      if (r.lic.dataset.k !== lk || r.lic.childNodes.length === 0) { r.lic.dataset.k = lk; r.lic.replaceChildren(...(x.licenses.length > 0 ? x.licenses.map(l => h('span', { class: 'chip lic', text: l })) : [h('span', { class: 'muted', text: '—' })])) }
      setBar(r.slotsBar, x.slots.total > 0 ? x.slots.busy / x.slots.total : 0)
      setText(r.slotsText, x.slots.busy + ' busy · ' + (x.slots.total - x.slots.busy) + ' free')
      const st = !x.render ? ['no render', 'muted'] : x.draining ? ['draining', 'warn'] : x.slots.busy > 0 ? ['rendering', 'running'] : ['idle', 'ok']
      if (r.state.dataset.k !== st[0]) { r.state.dataset.k = st[0]; r.state.replaceChildren(badge(st[0], st[1])) }
      setText(r.drain, x.draining ? 'Undrain' : 'Drain')
      r.drain.disabled = !x.render
      updateHealth(r, x)
    })
    $('#hosts-empty').hidden = list.length > 0
  }
  function updateHealth (r: HostRow, x: HostSummary): void {
    const age = x.lastSeenMsAgo + (Date.now() - hostsFetchedAt)
    const cls = age <= 3500 ? 'ok' : age <= 6000 ? 'warn' : 'bad'
    r.health.className = 'health ' + cls
    setText(r.health, x.id === status?.peerId ? 'this node' : 'advert ' + (age / 1000).toFixed(1) + ' s ago')
  }

  // ----------------------------------------------------------------- queues

  const GROUPS = ['queued', 'active', 'done', 'failed', 'killed'] as const
  interface JobRow { tr: HTMLTableRowElement, pos: HTMLElement, name: HTMLAnchorElement, badges: HTMLElement, pri: HTMLInputElement, priText: HTMLElement, prog: HTMLElement, progText: HTMLElement, hosts: HTMLElement, user: HTMLElement, when: HTMLElement, hold: HTMLButtonElement, jobId: string }
  const jobRows: Record<string, Map<string, JobRow>> = {}
  let queuesDeferred = false

  function jobAction (id: string, action: string, body?: unknown): Promise<any> {
    return api('POST', '/v1/jobs/' + encodeURIComponent(id) + '/' + action, body ?? {})
  }
  async function setPriority (id: string, value: string): Promise<void> {
    const p = Number(value)
    if (!Number.isInteger(p) || p < 0 || p > 1000) { toast('priority: a whole number from 0 (most urgent) to 1000', true); return }
    await jobAction(id, 'priority', { priority: p })
    toast('priority ' + p + ' set')
    loadJobs()
  }

  function renderQueues (): void {
    // never move rows under a priority being typed: render once the field loses focus
    const active = document.activeElement
    if (active instanceof HTMLInputElement && $('#view-queues').contains(active)) { queuesDeferred = true; return }
    queuesDeferred = false
    const sched = status?.scheduler
    setText($('#queue-sched'), sched == null ? 'No scheduler elected yet.' : 'Scheduled by ' + hostName(sched) + ' (' + shortId(sched) + ') in term ' + (status?.term ?? 0))
    for (const g of GROUPS) {
      const list = jobs.filter(j => j.state === g)
      if (g === 'active' || g === 'queued') list.sort((a, b) => (a.queuePosition ?? Infinity) - (b.queuePosition ?? Infinity))
      else list.sort((a, b) => (b.finishedAt ?? 0) - (a.finishedAt ?? 0))
      const section = $('#group-' + g)
      section.hidden = list.length === 0
      setText(section.querySelector('h2 .n') as HTMLElement, String(list.length))
      const rows = (jobRows[g] ??= new Map())
      const finished = g !== 'active' && g !== 'queued'
      syncRows(section.querySelector('tbody') as HTMLElement, rows, list.slice(0, 200), j => j.id, (j) => {
        const r: JobRow = {
          tr: h('tr'), pos: h('td', { class: 'num muted' }), name: h('a', { href: '#/job/' + encodeURIComponent(j.id) }), badges: h('span', { class: 'badges' }),
          pri: h('input', { type: 'number', min: 0, max: 1000, class: 'pri', title: 'priority: lower is more urgent; Enter to apply', 'aria-label': 'priority' }),
          priText: h('span', { class: 'num' }), prog: bar(0, 'job'), progText: h('span', { class: 'small' }), hosts: h('td', { class: 'small' }), user: h('td', { class: 'small' }),
          when: h('td', { class: 'small muted' }), hold: h('button', { type: 'button', class: 'btn small' }), jobId: j.id
        }
        r.tr.dataset.job = j.id
        r.pri.addEventListener('keydown', (e) => { if (e.key === 'Enter') r.pri.blur() })
        r.pri.addEventListener('change', () => { void act(null, async () => { await setPriority(r.jobId, r.pri.value) }) })
        r.pri.addEventListener('blur', () => { if (queuesDeferred) window.setTimeout(renderQueues, 0) })
        r.hold.addEventListener('click', () => {
          const cur = jobs.find(x => x.id === r.jobId)
          void act(r.hold, async () => { await jobAction(r.jobId, cur?.held === true ? 'release' : 'hold'); loadJobs() })
        })
        r.tr.append(r.pos, h('td', null, r.name, r.badges, h('div', { class: 'muted mono small', text: j.id })), h('td', null, finished ? r.priText : r.pri),
          h('td', { class: 'prog-cell' }, r.prog, r.progText), r.hosts, r.user, r.when, h('td', { class: 'actions' }, finished ? null : r.hold))
        return r
      }, (r, j) => {
        setText(r.pos, j.queuePosition != null ? String(j.queuePosition) : '')
        setText(r.name, j.name)
        const bk = (j.held ? 'h' : '') + (j.frames.failed > 0 ? 'f' : '')
        if (r.badges.dataset.k !== bk) { r.badges.dataset.k = bk; r.badges.replaceChildren(...[j.held ? badge('held', 'warn') : null, j.frames.failed > 0 ? badge(j.frames.failed + ' failed', 'failed') : null].filter((b): b is HTMLElement => b != null)) }
        if (document.activeElement !== r.pri) r.pri.value = String(j.priority)
        setText(r.priText, String(j.priority))
        setBar(r.prog, j.frames.total > 0 ? j.frames.done / j.frames.total : 0)
        setText(r.progText, j.frames.done + '/' + j.frames.total + ' done' + (j.frames.running > 0 ? ' · ' + j.frames.running + ' running' : ''))
        setText(r.hosts, j.hosts.length > 0 ? j.hosts.map(hostName).join(', ') : '—')
        setText(r.user, j.user + ' · from ' + hostName(j.origin))
        setText(r.when, finished ? (j.state + ' ' + ago(j.finishedAt)) : 'submitted ' + ago(j.submittedAt))
        setText(r.hold, j.held ? 'Release' : 'Hold')
      })
    }
    $('#queues-empty').hidden = jobs.length > 0
  }

  // ---------------------------------------------------------------- running

  interface RunRow { tr: HTMLTableRowElement, job: HTMLAnchorElement, frames: HTMLElement, host: HTMLElement, prog: HTMLElement, pct: HTMLElement, elapsed: HTMLElement, attempt: HTMLElement, res: HTMLElement, since: number | null, key: string }
  interface RunItem { job: JobView, task: TaskView }
  const runRows = new Map<string, RunRow>()
  const recentRows = new Map<string, RunRow>()
  let runItems: RunItem[] = []

  function cpuMem (s: TaskStats | null): string {
    if (s == null) return '—'
    const pct = s.wallSeconds > 0 ? Math.round(100 * s.cpuSeconds / s.wallSeconds) + ' % CPU' : s.cpuSeconds.toFixed(1) + ' s CPU'
    return pct + ' · ' + bytes(s.peakRssBytes)
  }

  let runningMs = 0
  const loadRunning = throttled(async () => {
    const t0 = performance.now()
    jobs = await api<JobSummary[]>('GET', '/v1/jobs')
    const active = jobs.filter(j => j.state === 'active')
    const views = await Promise.all(active.map(async j => { try { return await api<JobView>('GET', '/v1/jobs/' + encodeURIComponent(j.id)) } catch { return null } }))
    runItems = []
    for (const v of views) if (v != null) for (const t of v.tasks) runItems.push({ job: v, task: t })
    runningMs = performance.now() - t0
    if (tab === 'running') renderRunning()
  }, () => Math.max(1000, 4 * runningMs))

  function runRow (it: RunItem, recent: boolean): RunRow {
    const key = it.job.id + '#' + it.task.index
    const r: RunRow = {
      tr: h('tr'), job: h('a', { href: '#/job/' + encodeURIComponent(it.job.id) }), frames: h('td', { class: 'num' }), host: h('td'),
      prog: bar(0, 'run'), pct: h('span', { class: 'small num' }), elapsed: h('td', { class: 'num' }), attempt: h('td', { class: 'num' }),
      res: h('td', { class: 'small', title: 'CPU time over wall time, and peak memory, as reported when an attempt ends' }), since: null, key
    }
    r.tr.dataset.task = key
    const kill = confirmButton('Kill', 'Kill frame?', 'btn danger small', async () => {
      const res = await jobAction(it.job.id, 'kill-frames', { frames: String(it.task.frames[0]) })
      toast('frame ' + frameLabel(it.task.frames) + ': ' + String(res.killed) + ' frame(s) stopped and queued again')
      loadRunning()
    })
    r.tr.append(h('td', null, r.job), r.frames, r.host, recent ? r.elapsed : h('td', { class: 'prog-cell' }, r.prog, r.pct), recent ? r.res : r.elapsed, r.attempt, recent ? h('td') : r.res, h('td', { class: 'actions' }, recent ? null : kill))
    return r
  }

  function renderRunning (): void {
    const running = runItems.filter(x => x.task.state === 'running').sort((a, b) => (a.task.dispatchedAt ?? 0) - (b.task.dispatchedAt ?? 0))
    syncRows($('#running-body'), runRows, running, x => x.job.id + '#' + x.task.index, x => runRow(x, false), (r, x) => {
      setText(r.job, x.job.name); setText(r.frames, frameLabel(x.task.frames)); setText(r.host, hostName(x.task.host))
      setBar(r.prog, x.task.progress); setText(r.pct, Math.round(x.task.progress * 100) + ' %')
      r.since = x.task.startedAt ?? x.task.dispatchedAt
      setText(r.elapsed, r.since != null ? duration((Date.now() - r.since) / 1000) : '—')
      setText(r.attempt, String(x.task.attempts)); setText(r.res, cpuMem(x.task.attempts > 1 ? x.task.stats : null))
    })
    $('#running-empty').hidden = running.length > 0
    setText($('#running-count'), running.length + ' running')
    const recent = runItems.filter(x => x.task.state === 'done' && x.task.finishedAt != null).sort((a, b) => (b.task.finishedAt ?? 0) - (a.task.finishedAt ?? 0)).slice(0, 12)
    syncRows($('#recent-body'), recentRows, recent, x => x.job.id + '#' + x.task.index, x => runRow(x, true), (r, x) => {
      setText(r.job, x.job.name); setText(r.frames, frameLabel(x.task.frames)); setText(r.host, hostName(x.task.host))
      setText(r.elapsed, x.task.stats != null ? duration(x.task.stats.wallSeconds) : '—'); setText(r.attempt, String(x.task.attempts)); setText(r.res, cpuMem(x.task.stats))
    })
    $('#recent').hidden = recent.length === 0
  }
  function tickRunning (): void {
    for (const r of runRows.values()) if (r.since != null) setText(r.elapsed, duration((Date.now() - r.since) / 1000))
  }

  // -------------------------------------------------------------- job page

  const STATE_COLOR: Record<string, string> = {}
  function readColors (): void {
    const cs = getComputedStyle(document.documentElement)
    for (const k of ['queued', 'running', 'run-bg', 'done', 'failed', 'held', 'panel', 'text', 'cell-text']) STATE_COLOR[k] = cs.getPropertyValue('--' + k).trim()
  }

  /** The frame grid: one canvas cell per frame, redrawn cell by cell as frames change. */
  class FrameGrid {
    readonly canvas = h('canvas', { class: 'grid', role: 'img', 'aria-label': 'frame grid' })
    n = 0; cell = 10; cols = 1; hover = -1; selected = -1; drawnAt = 0
    private full = true; private raf = 0; private width = 0
    private readonly dirty = new Set<number>()
    private readonly ctx: CanvasRenderingContext2D
    private readonly resize: ResizeObserver
    constructor (readonly box: HTMLElement, readonly look: (i: number) => { state: TaskState, progress: number, attempts: number, frame: number, held: boolean }) {
      this.ctx = this.canvas.getContext('2d', { alpha: false }) as CanvasRenderingContext2D
      box.append(this.canvas)
      // a hidden page has no width: keep the layout until it shows again
      this.resize = new ResizeObserver(() => { if (this.box.clientWidth > 0 && this.box.clientWidth !== this.width) this.layout() })
      this.resize.observe(box)
    }

    dispose (): void {
      this.resize.disconnect()
      if (this.raf !== 0) cancelAnimationFrame(this.raf)
      this.raf = 0
      this.canvas.remove()
    }

    setCount (n: number): void { this.n = n; this.layout() }

    layout (): void {
      this.width = this.box.clientWidth
      const w = Math.max(200, this.width)
      // cells as large as fit in about 560 px of height, between 6 and 40 px
      const ideal = Math.floor(Math.sqrt(w * 560 / Math.max(1, this.n)))
      this.cell = Math.max(6, Math.min(40, ideal))
      this.cols = Math.max(1, Math.floor(w / this.cell))
      const rows = Math.max(1, Math.ceil(this.n / this.cols))
      const dpr = window.devicePixelRatio || 1
      const cw = this.cols * this.cell; const ch = rows * this.cell
      this.canvas.style.width = cw + 'px'; this.canvas.style.height = ch + 'px'
      this.canvas.width = Math.round(cw * dpr); this.canvas.height = Math.round(ch * dpr)
      this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0)
      this.full = true
      this.schedule()
    }

    mark (i: number): void { if (i >= 0 && i < this.n) { this.dirty.add(i); this.schedule() } }
    all (): void { this.full = true; this.schedule() }
    private schedule (): void { if (this.raf === 0) this.raf = requestAnimationFrame(() => { this.raf = 0; this.draw() }) }

    private draw (): void {
      const ctx = this.ctx
      if (this.full) {
        this.full = false; this.dirty.clear()
        ctx.fillStyle = STATE_COLOR.panel
        ctx.fillRect(0, 0, this.canvas.width, this.canvas.height)
        for (let i = 0; i < this.n; i++) this.drawCell(i)
        if (this.drawnAt === 0) { this.drawnAt = performance.now(); performance.mark('farmesh-grid-drawn') }
      } else {
        for (const i of this.dirty) this.drawCell(i)
        this.dirty.clear()
      }
    }

    private drawCell (i: number): void {
      const ctx = this.ctx; const c = this.cell; const gap = c >= 12 ? 2 : 1; const s = c - gap
      const x = (i % this.cols) * c; const y = Math.floor(i / this.cols) * c
      const v = this.look(i)
      ctx.fillStyle = STATE_COLOR.panel
      ctx.fillRect(x, y, c, c)
      if (v.state === 'running') {
        ctx.fillStyle = STATE_COLOR['run-bg']; ctx.fillRect(x, y, s, s)
        const ph = Math.round(s * Math.max(0.08, Math.min(1, v.progress)))
        ctx.fillStyle = STATE_COLOR.running; ctx.fillRect(x, y + s - ph, s, ph)
      } else {
        ctx.fillStyle = v.state === 'queued' && v.held ? STATE_COLOR.held : STATE_COLOR[v.state]
        ctx.fillRect(x, y, s, s)
      }
      if (v.attempts > 1 && c >= 8) {
        // a retried frame: a small corner mark
        const m = Math.max(3, Math.floor(s / 4))
        ctx.fillStyle = 'rgba(255,255,255,0.85)'
        ctx.beginPath(); ctx.moveTo(x + s - m, y); ctx.lineTo(x + s, y); ctx.lineTo(x + s, y + m); ctx.closePath(); ctx.fill()
      }
      if (c >= 26) {
        ctx.fillStyle = v.state === 'done' || (v.state === 'queued' && v.held) ? STATE_COLOR['cell-text'] : STATE_COLOR.text
        ctx.font = (c >= 34 ? 11 : 9) + 'px system-ui, sans-serif'
        ctx.textAlign = 'center'; ctx.textBaseline = 'middle'
        ctx.fillText(String(v.frame), x + s / 2, y + s / 2 + 0.5, s - 2)
      }
      if (i === this.selected || i === this.hover) {
        ctx.strokeStyle = i === this.selected ? '#ffffff' : 'rgba(255,255,255,0.55)'
        ctx.lineWidth = i === this.selected ? 2 : 1
        const o = ctx.lineWidth / 2
        ctx.strokeRect(x + o, y + o, s - 2 * o, s - 2 * o)
      }
    }

    indexAt (clientX: number, clientY: number): number {
      const r = this.canvas.getBoundingClientRect()
      const col = Math.floor((clientX - r.left) / this.cell); const row = Math.floor((clientY - r.top) / this.cell)
      if (col < 0 || col >= this.cols || row < 0) return -1
      const i = row * this.cols + col
      return i < this.n ? i : -1
    }

    /** the cell's rectangle in page coordinates */
    rect (i: number): { x: number, y: number, w: number, h: number } {
      const r = this.canvas.getBoundingClientRect()
      return { x: r.left + window.scrollX + (i % this.cols) * this.cell, y: r.top + window.scrollY + Math.floor(i / this.cols) * this.cell, w: this.cell, h: this.cell }
    }
  }

  interface JobPage {
    id: string
    view: JobView | null
    tasks: TaskView[]
    cellFrame: number[]
    cellTask: Int32Array
    frameCell: Map<number, number>
    /** when an event last changed each task: an older poll must not undo it */
    evAt: Float64Array
    pending: TaskEvent[] | null
    stale: boolean
    loading: boolean
    thumbs: Map<string, string>
  }
  let J: JobPage | null = null
  let grid: FrameGrid | null = null
  /** for tests and scripts: when each frame's cell turned done, and where cells are */
  const probe = {
    doneAt: {} as Record<number, number>,
    /** task events received from the stream, and job polls made */
    events: 0,
    polls: 0,
    /** how long the last job polls took, request to grid marked (ms) */
    pollMs: [] as number[],
    /** performance.now() when the job's data arrived, and when its grid was first drawn */
    dataAt: 0,
    get gridDrawnAt (): number { return grid?.drawnAt ?? 0 },
    cellState: (frame: number): string | null => { const i = J?.frameCell.get(frame); return i == null || J == null ? null : J.tasks[J.cellTask[i]].state },
    cellAttempts: (frame: number): number | null => { const i = J?.frameCell.get(frame); return i == null || J == null ? null : J.tasks[J.cellTask[i]].attempts },
    cellProgress: (frame: number): number | null => { const i = J?.frameCell.get(frame); return i == null || J == null ? null : J.tasks[J.cellTask[i]].progress },
    /** the cell of a frame in viewport coordinates, scrolled into view */
    cellRect: (frame: number) => {
      const i = J?.frameCell.get(frame)
      if (i == null || grid == null) return null
      const r = grid.rect(i)
      if (r.y - window.scrollY < 60 || r.y + r.h - window.scrollY > window.innerHeight) window.scrollTo({ top: Math.max(0, r.y - window.innerHeight / 2), behavior: 'instant' })
      return { x: r.x - window.scrollX, y: r.y - window.scrollY, w: r.w, h: r.h }
    }
  }
  ;(window as any).farmesh = probe

  function lookCell (i: number): { state: TaskState, progress: number, attempts: number, frame: number, held: boolean } {
    const t = (J as JobPage).tasks[(J as JobPage).cellTask[i]]
    return { state: t.state, progress: t.progress, attempts: t.attempts, frame: (J as JobPage).cellFrame[i], held: J?.view?.held === true }
  }

  function enterJob (id: string): void {
    if (J?.id === id) return
    leaveJob()
    J = { id, view: null, tasks: [], cellFrame: [], cellTask: new Int32Array(0), frameCell: new Map(), evAt: new Float64Array(0), pending: [], stale: false, loading: true, thumbs: new Map() }
    probe.doneAt = {}; probe.dataAt = 0; probe.pollMs = []
    $('#job-error').hidden = true
    setText($('#job-name'), id); setText($('#job-id'), id)
    $('#job-body').hidden = true
    $('#job-loading').hidden = false
    $('#detail').replaceChildren(h('p', { class: 'muted', text: 'Click a frame to see its host, attempts, log and image.' }))
    void loadJob(id)
  }

  function leaveJob (): void {
    if (J == null) return
    for (const url of J.thumbs.values()) URL.revokeObjectURL(url)
    J = null
    grid?.dispose()
    grid = null
    $('#tip').hidden = true
  }

  async function loadJob (id: string): Promise<void> {
    let view: JobView
    try {
      view = await api<JobView>('GET', '/v1/jobs/' + encodeURIComponent(id))
    } catch (err: any) {
      if (J?.id !== id || err instanceof AuthError) return
      $('#job-loading').hidden = true
      const e = $('#job-error'); e.hidden = false; setText(e, 'Cannot show job ' + id + ': ' + err.message)
      return
    }
    if (J?.id !== id) return
    probe.dataAt = performance.now()
    const page = J
    page.view = view
    page.tasks = view.tasks
    const cells: Array<[number, number]> = []
    for (const t of view.tasks) for (const f of t.frames) cells.push([f, t.index])
    cells.sort((a, b) => a[0] - b[0])
    page.cellFrame = cells.map(c => c[0])
    page.cellTask = Int32Array.from(cells.map(c => c[1]))
    page.frameCell = new Map(cells.map((c, i) => [c[0], i]))
    page.evAt = new Float64Array(view.tasks.length)
    page.loading = false
    $('#job-loading').hidden = true
    $('#job-body').hidden = false
    grid = new FrameGrid($('#grid-box'), lookCell)
    grid.setCount(cells.length)
    wireGrid(grid)
    const queued = page.pending ?? []
    page.pending = null
    for (const ev of queued) applyTaskEvent(ev)
    renderJobHeader()
  }

  function markTask (t: TaskView): void {
    if (J == null || grid == null) return
    for (const f of t.frames) { const i = J.frameCell.get(f); if (i != null) grid.mark(i) }
  }

  function noteDone (t: TaskView, prev: TaskState): void {
    if (t.state === 'done' && prev !== 'done') { const now = Date.now(); for (const f of t.frames) probe.doneAt[f] = now }
  }

  function applyTaskEvent (ev: TaskEvent): void {
    if (J == null) return
    if (J.pending != null) { J.pending.push(ev); return }
    const t = J.tasks[ev.index]
    if (t == null) { J.stale = true; return }
    const prev = t.state
    if (prev === ev.state && t.host === ev.host && t.attempts === ev.attempts) return
    t.state = ev.state; t.host = ev.host; t.attempts = ev.attempts
    if (ev.state !== 'running') t.progress = ev.state === 'done' ? 1 : 0
    else if (prev !== 'running') { t.progress = 0; t.dispatchedAt = Date.now(); t.startedAt = null }
    J.evAt[ev.index] = Date.now()
    // outputs, stats and the log come with the next poll
    if (ev.state === 'done' || ev.state === 'failed' || prev === 'running') J.stale = true
    noteDone(t, prev)
    markTask(t)
    if (grid != null && grid.selected >= 0 && J.cellTask[grid.selected] === ev.index) renderDetail()
    scheduleHeader()
  }

  async function refreshJob (): Promise<void> {
    if (J == null || J.loading || J.view == null) return
    const page = J
    const asked = Date.now()
    const started = performance.now()
    probe.polls++
    const view = await api<JobView>('GET', '/v1/jobs/' + encodeURIComponent(page.id))
    if (J !== page) return
    page.stale = false
    if (view.tasks.length !== page.tasks.length) { leaveJob(); enterJob(page.id); return }
    for (const nt of view.tasks) {
      const t = page.tasks[nt.index]
      if (t == null) continue
      const { state, host, attempts, progress } = t
      // an event newer than this answer wins over it
      if (page.evAt[nt.index] <= asked || t.state === nt.state) Object.assign(t, nt)
      if (t.state !== state || t.host !== host || t.attempts !== attempts || Math.abs(t.progress - progress) > 0.001) { noteDone(t, state); markTask(t) }
    }
    page.view = { ...view, tasks: page.tasks }
    probe.pollMs.push(Math.round(performance.now() - started))
    if (probe.pollMs.length > 50) probe.pollMs.shift()
    renderJobHeader()
    if (grid != null && grid.selected >= 0) renderDetail()
  }
  // at most once a second; a job so large that one poll takes long is polled less often (never more than a quarter of the time)
  const pollJob = throttled(refreshJob, () => Math.max(1000, 4 * (probe.pollMs[probe.pollMs.length - 1] ?? 0)))

  let headerQueued = false
  function scheduleHeader (): void {
    if (headerQueued) return
    headerQueued = true
    requestAnimationFrame(() => { headerQueued = false; renderJobHeader() })
  }

  function jobCounts (): Counts & { progress: number } {
    const c = { total: 0, done: 0, running: 0, failed: 0, queued: 0, progress: 0 }
    if (J == null) return c
    for (const t of J.tasks) {
      const n = t.frames.length
      c.total += n; c[t.state] += n
      c.progress += t.state === 'done' ? n : t.state === 'running' ? n * t.progress : 0
    }
    return c
  }

  function renderJobHeader (): void {
    if (J?.view == null) return
    const v = J.view
    const c = jobCounts()
    setText($('#job-name'), v.name); setText($('#job-id'), v.id)
    document.title = v.name + ' · farmesh'
    const b = $('#job-badges')
    const bk = v.state + (v.held ? 'h' : '')
    if (b.dataset.k !== bk) { b.dataset.k = bk; b.replaceChildren(...[badge(v.state, v.state), v.held ? badge('held', 'warn') : null].filter((x): x is HTMLElement => x != null)) }
    setText($('#job-meta'), [v.renderer, 'priority ' + v.priority, 'user ' + v.user, 'from ' + hostName(v.origin), 'submitted ' + clock(v.submittedAt), v.hosts.length > 0 ? 'on ' + v.hosts.map(hostName).join(', ') : ''].filter(Boolean).join(' · '))
    const total = Math.max(1, c.total)
    for (const k of ['done', 'running', 'failed'] as const) {
      const el = $('#jp-' + k)
      const frac = k === 'running' ? (c.progress - c.done) / total : c[k] / total
      el.style.width = (Math.max(0, frac) * 100).toFixed(2) + '%'
    }
    const pct = Math.floor(100 * c.progress / total)
    setText($('#job-progress-text'), c.done + ' of ' + c.total + ' frames done (' + pct + ' %)' + (c.running > 0 ? ' · ' + c.running + ' running' : '') + (c.failed > 0 ? ' · ' + c.failed + ' failed' : '') + (c.queued > 0 ? ' · ' + c.queued + ' queued' : ''))
    setText($('#job-eta'), eta(v, c))
    const hold = $('#btn-hold') as HTMLButtonElement
    const finished = v.state === 'done' || v.state === 'failed' || v.state === 'killed'
    setText(hold, v.held ? 'Release' : 'Hold'); hold.disabled = finished
    const pri = $('#job-pri') as HTMLInputElement
    if (document.activeElement !== pri) pri.value = String(v.priority)
    pri.disabled = finished; ($('#btn-pri') as HTMLButtonElement).disabled = finished
    const retry = $('#btn-retry') as HTMLButtonElement
    retry.disabled = c.failed === 0; setText(retry, 'Retry failed' + (c.failed > 0 ? ' (' + c.failed + ')' : ''))
    ;($('#btn-kill') as HTMLButtonElement).disabled = finished
    if (v.reason != null) { $('#job-reason').hidden = false; setText($('#job-reason'), v.reason) } else $('#job-reason').hidden = true
  }

  function eta (v: JobView, c: Counts & { progress: number }): string {
    if (v.state === 'done') return 'finished in ' + duration(((v.finishedAt ?? Date.now()) - (v.startedAt ?? v.submittedAt)) / 1000)
    if (v.state === 'failed' || v.state === 'killed') return v.state + ' ' + ago(v.finishedAt)
    if (v.held) return 'held: no frame starts until it is released'
    if (v.startedAt == null || c.done === 0) return v.state === 'queued' ? 'waiting for a free slot' : 'estimating time left…'
    const rate = c.progress / Math.max(1, (Date.now() - v.startedAt) / 1000)
    const left = (c.total - c.progress) / Math.max(1e-9, rate)
    return 'about ' + duration(left) + ' left'
  }

  function taskAtCell (i: number): TaskView | null { return J == null || i < 0 ? null : J.tasks[J.cellTask[i]] ?? null }

  function wireGrid (g: FrameGrid): void {
    const tip = $('#tip')
    g.canvas.addEventListener('mousemove', (e) => {
      const i = g.indexAt(e.clientX, e.clientY)
      if (i !== g.hover) { const old = g.hover; g.hover = i; g.mark(old); g.mark(i) }
      const t = taskAtCell(i)
      if (t == null || J == null) { tip.hidden = true; return }
      tip.hidden = false
      setText(tip, 'frame ' + J.cellFrame[i] + ' · ' + t.state + (t.state === 'queued' && J.view?.held === true ? ' (held)' : '') + (t.state === 'running' ? ' ' + Math.round(t.progress * 100) + ' %' : '') + ' · ' + (t.host != null ? hostName(t.host) : 'no host') + ' · ' + t.attempts + (t.attempts === 1 ? ' attempt' : ' attempts'))
      const x = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 8)
      tip.style.left = x + 'px'; tip.style.top = (e.clientY + 16) + 'px'
    })
    g.canvas.addEventListener('mouseleave', () => { tip.hidden = true; const old = g.hover; g.hover = -1; g.mark(old) })
    g.canvas.addEventListener('click', (e) => { const i = g.indexAt(e.clientX, e.clientY); if (i >= 0) select(i) })
  }

  function select (i: number): void {
    if (grid == null) return
    const old = grid.selected; grid.selected = i; grid.mark(old); grid.mark(i)
    renderDetail()
  }

  function outputOf (t: TaskView, frame: number): string | null {
    if (t.outputs.length === 0) return null
    if (t.outputs.length === t.frames.length) return t.outputs[t.frames.indexOf(frame)] ?? t.outputs[0]
    const digits = String(frame)
    return t.outputs.find(o => new RegExp('(^|\\D)0*' + digits + '(\\D|$)').test(o)) ?? t.outputs[0]
  }

  let detailKey = ''
  function renderDetail (): void {
    if (J?.view == null || grid == null || grid.selected < 0) return
    const i = grid.selected
    const t = taskAtCell(i)
    if (t == null) return
    const frame = J.cellFrame[i]
    const key = [frame, t.state, t.host, t.attempts, t.errors.length, t.logTail.length, t.logTail[t.logTail.length - 1], t.outputs.join(','), t.finishedAt, t.startedAt].join('|')
    const progEl = document.getElementById('detail-progress')
    if (key === detailKey && progEl != null) { setText(progEl, Math.round(t.progress * 100) + ' %'); return }
    detailKey = key
    const rows: Array<[string, Node | string]> = [
      ['State', badge(t.state, t.state)],
      ['Host', t.host != null ? h('span', { title: t.host, text: hostName(t.host) }) : '—'],
      ['Attempts', String(t.attempts)]
    ]
    if (t.frames.length > 1) rows.push(['Task', 'frames ' + frameLabel(t.frames) + ' render together'])
    if (t.state === 'running') rows.push(['Progress', h('span', { id: 'detail-progress', text: Math.round(t.progress * 100) + ' %' })])
    if (t.dispatchedAt != null) rows.push(['Started', clock(t.startedAt ?? t.dispatchedAt)])
    if (t.finishedAt != null && t.state !== 'running') rows.push(['Finished', clock(t.finishedAt) + (t.stats != null ? ' · ' + duration(t.stats.wallSeconds) : '')])
    if (t.stats != null) rows.push(['Resources', t.stats.cpuSeconds.toFixed(1) + ' s CPU' + (t.stats.wallSeconds > 0 ? ' (' + Math.round(100 * t.stats.cpuSeconds / t.stats.wallSeconds) + ' %)' : '') + ' · peak ' + bytes(t.stats.peakRssBytes) + ' · exit ' + String(t.stats.exitCode)])
    const out = outputOf(t, frame)
    if (out != null) rows.push(['Output', out])
    const children: Node[] = [
      h('h3', null, 'Frame ' + frame),
      h('dl', null, ...rows.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', null, v)]))
    ]
    if (t.state === 'done' && out != null) {
      if (J.view.origin === status?.peerId) {
        const box = h('div', { class: 'thumb-box loading', text: 'loading the image…' })
        children.push(box)
        void loadThumb(J, out).then(url => {
          if (url == null) return
          const img = h('img', { class: 'thumb', alt: 'frame ' + frame, title: 'open full size' })
          img.addEventListener('click', () => { openLightbox(url, 'frame ' + frame + ' · ' + out) })
          img.addEventListener('load', () => { box.classList.remove('loading'); box.replaceChildren(img) }, { once: true })
          img.src = url
        }).catch((err: any) => { box.classList.remove('loading'); setText(box, 'image not available here: ' + err.message) })
      } else {
        children.push(h('p', { class: 'muted small', text: 'The image is stored on the job\'s origin, ' + hostName(J.view.origin) + ': open the dashboard there to view it.' }))
      }
    }
    // errors read "<peer id>: message": name the host instead
    if (t.errors.length > 0) children.push(h('h4', { text: 'Errors' }), h('ul', { class: 'errors' }, ...t.errors.map(e => h('li', { text: e.replace(/^([1-9A-HJ-NP-Za-km-z]{20,}|\?): /, (_m, id: string) => (id === '?' ? 'unknown host' : hostName(id)) + ': ') }))))
    const log = t.logTail.length > 0 ? h('pre', { class: 'log', text: t.logTail.join('\n') }) : null
    children.push(h('h4', { text: 'Log tail' }), log ?? h('p', { class: 'muted small', text: t.state === 'running' ? 'The log arrives when the attempt ends.' : 'No log.' }))
    const jobId = J.id
    const actions = h('div', { class: 'actions' })
    const finished = J.view.state === 'done' || J.view.state === 'killed'
    if (t.state === 'running') {
      actions.append(confirmButton('Kill frame', 'Kill frame ' + frame + '?', 'btn danger', async () => {
        const r = await jobAction(jobId, 'kill-frames', { frames: String(frame) })
        toast('frame ' + frame + ': ' + String(r.killed) + ' frame(s) stopped; it runs again')
      }))
    } else if ((t.state === 'done' || t.state === 'failed') && !finished) {
      actions.append(h('button', {
        type: 'button',
        class: 'btn',
        text: 'Render again',
        onclick: (e: Event) => { void act(e.currentTarget as HTMLButtonElement, async () => { const r = await jobAction(jobId, 'retry', { frames: String(frame) }); toast(String(r.retried) + ' frame(s) queued again') }) }
      }))
    }
    if (actions.childNodes.length > 0) children.push(actions)
    $('#detail').replaceChildren(...children)
    // the end of the log is what matters
    if (log != null) log.scrollTop = log.scrollHeight
  }

  async function loadThumb (page: JobPage, name: string): Promise<string | null> {
    const have = page.thumbs.get(name)
    if (have != null) return have
    const res = await fetch('/v1/jobs/' + encodeURIComponent(page.id) + '/outputs/' + encodeURIComponent(name), { headers: { authorization: 'Bearer ' + token } })
    if (!res.ok) throw new Error(((await res.json().catch(() => null))?.error as string | undefined) ?? 'HTTP ' + res.status)
    const url = URL.createObjectURL(await res.blob())
    if (J !== page) { URL.revokeObjectURL(url); return null }
    page.thumbs.set(name, url)
    return url
  }

  function openLightbox (src: string, caption: string): void {
    const box = $('#lightbox')
    const img = box.querySelector('img') as HTMLImageElement
    img.src = src
    setText(box.querySelector('figcaption') as HTMLElement, caption)
    box.hidden = false
  }

  function gotoFrame (value: string): void {
    if (J == null || grid == null) return
    const i = J.frameCell.get(Number(value))
    if (i == null) { toast('this job has no frame ' + value, true); return }
    select(i)
    const r = grid.rect(i)
    window.scrollTo({ top: Math.max(0, r.y - window.innerHeight / 2) })
  }

  // ---------------------------------------------------------------- events

  let es: EventSource | null = null
  let everOpen = false
  function openEvents (): void {
    es = new EventSource('/v1/events?token=' + encodeURIComponent(token))
    es.addEventListener('open', () => {
      setLive(true)
      // after a reconnect, catch up on whatever was missed
      if (everOpen) { loadStatus(); loadHosts(); loadJobs(); if (J != null) J.stale = true; if (tab === 'running') loadRunning() }
      everOpen = true
    })
    es.addEventListener('error', () => {
      setLive(false)
      if (es?.readyState === EventSource.CLOSED) {
        // refused (a wrong token) or the node went away: check, then try again
        window.setTimeout(() => { void api('GET', '/v1/status').then(() => { es?.close(); openEvents() }, () => { window.setTimeout(() => { es?.close(); openEvents() }, 3000) }) }, 2000)
      }
    })
    es.addEventListener('hosts', () => { loadHosts() })
    es.addEventListener('job', (e) => {
      const { job } = JSON.parse((e as MessageEvent).data) as { job: { id: string, name: string, state: string, priority: number, held: boolean } }
      const known = jobs.find(j => j.id === job.id)
      if (known != null) Object.assign(known, job)
      if (J?.view != null && J.id === job.id) {
        const heldChanged = J.view.held !== job.held
        Object.assign(J.view, job); J.stale = true; scheduleHeader()
        if (heldChanged) grid?.all()
      }
      loadJobs()
      if (tab === 'running') loadRunning()
    })
    es.addEventListener('tasks', (e) => {
      const ev = JSON.parse((e as MessageEvent).data) as { jobId: string, tasks: TaskEvent[] }
      probe.events++
      if (J != null && J.id === ev.jobId) for (const t of ev.tasks) applyTaskEvent(t)
      if (tab === 'queues') loadJobs()
      if (tab === 'running') loadRunning()
    })
  }

  // ----------------------------------------------------------------- routes

  function route (): void {
    const hash = location.hash === '' ? defaultRoute : location.hash
    const m = /^#\/job\/([^/]+)/.exec(hash)
    const next: Tab = m != null ? 'job' : (['queues', 'running', 'hosts', 'federation'] as Tab[]).find(t => hash === '#/' + t) ?? 'queues'
    tab = next
    for (const t of ['queues', 'running', 'hosts', 'job', 'federation']) {
      $('#view-' + t).hidden = t !== tab
      const link = document.getElementById('tab-' + t)
      if (link != null) link.classList.toggle('active', t === tab || (t === 'queues' && tab === 'job'))
    }
    if (tab === 'job' && m != null) enterJob(decodeURIComponent(m[1]))
    else leaveJob()
    if (tab === 'queues') { renderQueues(); loadJobs() }
    if (tab === 'hosts') { renderHosts(); loadHosts() }
    if (tab === 'running') { renderRunning(); loadRunning() }
    document.title = (tab === 'job' && J?.view != null ? J.view.name : tab[0].toUpperCase() + tab.slice(1)) + ' · farmesh'
  }

  function tick (): void {
    if (document.visibilityState !== 'visible') return
    if (tab === 'hosts') for (const r of hostRows.values()) { const x = hosts.get(r.hostId); if (x != null) updateHealth(r, x) }
    if (tab === 'running') { tickRunning(); if (runRows.size > 0) loadRunning() }
    if (tab === 'queues' && Date.now() % 5000 < 1000) renderQueues()
    if (tab === 'job' && J?.view != null) {
      // progress of running frames: poll at most once a second while the page is visible
      if (J.stale || J.tasks.some(t => t.state === 'running')) pollJob()
      $('#job-eta').textContent = eta(J.view, jobCounts())
    }
  }

  // ------------------------------------------------------------------- boot

  function wireStatic (): void {
    $('#login-form').addEventListener('submit', (e) => {
      e.preventDefault()
      const v = ($('#login-token') as HTMLInputElement).value.trim()
      if (v === '') return
      token = v; sessionStorage.setItem(TOKEN_KEY, v)
      location.reload()
    })
    $('#lightbox').addEventListener('click', () => { $('#lightbox').hidden = true })
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape') $('#lightbox').hidden = true })
    $('#btn-hold').addEventListener('click', (e) => {
      const id = J?.id; const held = J?.view?.held === true
      if (id != null) void act(e.currentTarget as HTMLButtonElement, async () => { await jobAction(id, held ? 'release' : 'hold'); toast(held ? 'released' : 'held: no new frame starts') })
    })
    const applyPri = (): void => { const id = J?.id; if (id != null) void act($('#btn-pri') as HTMLButtonElement, async () => { await setPriority(id, ($('#job-pri') as HTMLInputElement).value) }) }
    $('#btn-pri').addEventListener('click', applyPri)
    $('#job-pri').addEventListener('keydown', (e) => { if (e.key === 'Enter') applyPri() })
    $('#btn-retry').addEventListener('click', (e) => {
      const id = J?.id
      if (id != null) void act(e.currentTarget as HTMLButtonElement, async () => { const r = await jobAction(id, 'retry'); toast(String(r.retried) + ' failed frame(s) queued again') })
    })
    const kill = confirmButton('Kill job', 'Kill the whole job?', 'btn danger', async () => { const id = J?.id; if (id != null) { await jobAction(id, 'kill'); toast('job killed') } })
    kill.id = 'btn-kill'
    $('#btn-kill').replaceWith(kill)
    $('#goto').addEventListener('keydown', (e) => { if (e.key === 'Enter') gotoFrame((e.currentTarget as HTMLInputElement).value) })
  }

  async function boot (): Promise<void> {
    readColors()
    wireStatic()
    if (token === '') { showLogin('This dashboard needs the node\'s API token.'); return }
    try {
      status = await api<Status>('GET', '/v1/status')
    } catch (err: any) {
      if (!(err instanceof AuthError)) toast('the node does not answer: ' + err.message, true)
      return
    }
    $('#app').hidden = false
    renderStatus()
    openEvents()
    window.addEventListener('hashchange', route)
    loadHosts(); loadJobs()
    route()
    window.setInterval(tick, 1000)
    document.addEventListener('visibilitychange', () => { if (document.visibilityState === 'visible') tick() })
  }

  void boot()
}
