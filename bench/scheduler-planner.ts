/**
 * Issue 3: the scheduler's dispatch planner (`planDispatch`, pure) in one
 * process, no network. 10,000 queued frames (20 jobs × 500 frames, varied
 * priorities and requirements) against synthetic hosts (varied CPUs, RAM,
 * OS, renderers, licences, GPUs, clocks; 4 slots each). Target: ≥ 5,000
 * dispatch decisions per second at 1,000 hosts.
 *
 * Two ways slots free up, both run until every frame is assigned:
 * - drain: every slot starts free; plan, then 10 % of the running frames
 *   finish, plan again, … (big plans, many decisions each)
 * - steady: every slot starts busy (other work); one slot frees at a time
 *   and the planner runs once per freed slot, as the node's scheduler does
 *   (a finished frame's report triggers one pump) — small plans of ~1
 *   decision, where per-plan fixed costs dominate
 *
 * decisions/s are given for planDispatch alone and "pump-equivalent": plus
 * building its inputs the way SchedulerRole.pump does (busy counts from the
 * running map, a PlannerHost per table entry, the queued tasks of every job
 * filtered from all its tasks, the hosts in use per job from a maintained
 * job → hosts map). Persistence and RPCs are not included.
 * Scaling: 100 → 1,000 → 10,000 hosts with the same 10,000 frames.
 */
import { planDispatch, shareKey, type PlannerHost, type PlannerJob, type PlanPolicy } from '../node/scheduler/dispatch-planner.js'
import { parseRequirements } from '../node/jobs/requirements.js'
import { matchesRequirements } from '../node/jobs/requirements.js'
import type { Fingerprint } from '../node/fingerprint-types.js'
import type { JobRecord, TaskRecord } from '../node/jobs/job-model.js'
import { median, quantile, type Bench, type BenchOptions, type BenchResult, type Figure } from './common.js'

const SLOTS = 4
const TARGET_PER_S = 5_000
const GiB = 1024 ** 3

function rng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function pick<T> (r: () => number, xs: readonly T[]): T { return xs[Math.floor(r() * xs.length)] }

function makeHosts (n: number, seed: number): Array<{ id: string, fingerprint: Fingerprint }> {
  const r = rng(seed)
  const hosts = []
  for (let i = 0; i < n; i++) {
    const renderers = [{ name: 'builtin', version: '0.1.0' }, { name: 'command', version: '1' }]
    const blender = pick(r, ['3.6.5', '4.1.1', '4.2.0', null])
    if (blender != null) renderers.push({ name: 'blender', version: blender })
    if (r() < 0.5) renderers.push({ name: 'povray', version: pick(r, ['3.7.0.10', '3.8.0']) })
    const licenses: string[] = []
    if (r() < 0.3) licenses.push('povray-pro')
    if (r() < 0.15) licenses.push('arnold')
    if (r() < 0.1) licenses.push('redshift')
    const osType = pick(r, ['debian', 'ubuntu', 'rocky'])
    hosts.push({
      id: `12D3KooWbench${String(i).padStart(6, '0')}${Math.floor(r() * 1e9).toString(36)}`,
      fingerprint: {
        hostname: `render-${String(i).padStart(5, '0')}`,
        machine: { family: 'x86_64', type: 'server', vendor: pick(r, ['Dell Inc.', 'HPE', 'Supermicro']), model: 'R' + String(Math.floor(r() * 900 + 100)) },
        os: { family: 'linux', type: osType, version: osType === 'debian' ? pick(r, ['11', '12']) : pick(r, ['22.04', '24.04', '9.3']), release: '6.1.0' },
        cpu: { count: pick(r, [4, 8, 16, 32, 64]), family: 'x86_64', model: pick(r, ['AMD EPYC 7543 32-Core Processor', 'Intel(R) Xeon(R) Gold 6338 CPU', 'AMD Ryzen 9 7950X 16-Core Processor']), speedMHz: 2000 + Math.round(r() * 2000) },
        ram: { total: pick(r, [8, 16, 32, 64, 128]) * GiB, free: 4 * GiB },
        swap: { total: pick(r, [0, 2, 8]) * GiB, free: 0 },
        gpus: r() < 0.3 ? [{ vendor: 'NVIDIA', model: pick(r, ['0x2204', '0x2684']) }] : [],
        renderers,
        licenses,
        slots: { total: SLOTS, busy: 0 }
      }
    })
  }
  return hosts
}

/** Requirement sets the jobs cycle through (each with its renderer, as jobRequirements adds). */
const REQUIREMENTS: string[][] = [
  ['renderer=command'],
  ['renderer=builtin', 'ram>=32G'],
  ['renderer=command', 'cpus>=16'],
  ['blender=4.x'],
  ['povray=3.7'],
  ['renderer=command', 'license=arnold'],
  ['renderer=builtin', 'os.type=debian'],
  ['blender=*', 'cpu.speed>=3000'],
  ['renderer=command', 'gpus>=1'],
  ['blender=3.x', 'ram>=16G', 'cpus>=8'],
  ['povray=3.7', 'license=povray-pro'],
  ['renderer=command', 'cpu.model=*EPYC*'],
  ['blender=4.x', 'ram>=64G'],
  ['renderer=builtin'],
  ['renderer=command', 'os.type=ubuntu', 'ram>=16G'],
  ['povray>=3.7', 'cpus>=32'],
  ['renderer=command', 'license=redshift'],
  ['renderer=builtin', 'swap>=2G'],
  ['blender=4.2', 'cpu.speed>=2500'],
  ['renderer=command', 'ram>=8G']
]

interface SimJob { job: JobRecord, tasks: TaskRecord[] }

function makeJobs (jobs: number, framesPerJob: number, seed: number, priorities: number[] = [10, 50, 50, 50, 100]): SimJob[] {
  const r = rng(seed)
  const out: SimJob[] = []
  for (let j = 0; j < jobs; j++) {
    const id = `jbench${String(j).padStart(5, '0')}`
    // only the fields the planner and the pump read; cast so this keeps compiling while JobRecord grows
    const job = {
      id, seq: j + 1, name: id, priority: pick(r, priorities), requirements: parseRequirements(REQUIREMENTS[j % REQUIREMENTS.length]),
      inputs: [], scene: 'scene', origin: 'origin', state: 'queued', submittedAt: 0, hostFailures: {}, excludedHosts: [],
      frameCount: framesPerJob, taskCount: framesPerJob, spec: { user: `user${j % 8}`, name: id }
    } as unknown as JobRecord
    const tasks: TaskRecord[] = []
    for (let i = 0; i < framesPerJob; i++) tasks.push({ jobId: id, index: i, frames: [i + 1], state: 'queued', attempts: 0, triedHosts: [], progress: 0, errors: [] } as unknown as TaskRecord)
    out.push({ job, tasks })
  }
  // queue order, as JobQueue keeps it: priority, then submission order
  return out.sort((a, b) => a.job.priority - b.job.priority || a.job.seq - b.job.seq)
}

interface SimResult {
  decisions: number
  plans: number
  /** CPU time (user+system, this process) spent in planDispatch / in planDispatch plus building its inputs, µs */
  plannerCpuUs: number
  pumpCpuUs: number
  /** wall time of the same, ns */
  plannerNs: number
  pumpNs: number
  /** per-plan planner wall time, ns (steady mode: the latency of one refill) */
  planNs: number[]
  unassigned: number
  capped: boolean
}

const cpuUs = (): number => { const u = process.cpuUsage(); return u.user + u.system }
const taskKey = (t: TaskRecord): string => `${t.jobId}#${t.index}`

/**
 * One simulation. State: the running map (task key → host id, like
 * SchedulerRole.running; entries `bg#…` are other work filling a slot) and
 * the tasks' states. Each plan rebuilds its inputs the way
 * SchedulerRole.pump() does at the time of writing: busy counts from the
 * running map, a PlannerHost per table entry, for every unfinished job its
 * queued tasks (filtered from all its tasks) and the hosts running its frames
 * (from the job → hosts map kept alongside `running`, like
 * SchedulerRole.hostsOf; its upkeep in setRunning / unsetRunning happens
 * where frames start and finish, outside the timed section, as in the node's
 * report handling), and the fair-share usage per user.
 */
function simulate (mode: 'drain' | 'steady', hostCount: number, o: { jobs: number, framesPerJob: number, seed: number, budgetMs: number, priorities?: number[] }): SimResult {
  const base = makeHosts(hostCount, o.seed)
  const jobs = makeJobs(o.jobs, o.framesPerJob, o.seed + 1, o.priorities)
  const jobById = new Map(jobs.map(j => [j.job.id, j.job]))
  const r = rng(o.seed + 2)
  const running = new Map<string, string>()
  // job id → host → frames of that job running there, maintained on every
  // change of `running`, as SchedulerRole.setRunning / unsetRunning do
  const jobHosts = new Map<string, Map<string, number>>()
  const jobOf = (key: string): string => key.slice(0, key.lastIndexOf('#'))
  const unsetRunning = (key: string): void => {
    const host = running.get(key)
    if (host == null) return
    running.delete(key)
    const jobId = jobOf(key)
    const m = jobHosts.get(jobId)
    if (m == null) return
    const n = (m.get(host) ?? 1) - 1
    if (n <= 0) m.delete(host); else m.set(host, n)
    if (m.size === 0) jobHosts.delete(jobId)
  }
  const setRunning = (key: string, host: string): void => {
    unsetRunning(key)
    running.set(key, host)
    const jobId = jobOf(key)
    const m = jobHosts.get(jobId) ?? new Map<string, number>()
    m.set(host, (m.get(host) ?? 0) + 1)
    jobHosts.set(jobId, m)
  }
  const hostsOf = (jobId: string): Set<string> => new Set(jobHosts.get(jobId)?.keys() ?? [])
  const runKeys: string[] = []
  const tasksByKey = new Map<string, TaskRecord>()
  if (mode === 'steady') {
    for (const h of base) for (let s = 0; s < SLOTS; s++) { const k = `bg#${h.id}#${s}`; setRunning(k, h.id); runKeys.push(k) }
  }
  const total = o.jobs * o.framesPerJob
  let assigned = 0
  const res: SimResult = { decisions: 0, plans: 0, plannerCpuUs: 0, pumpCpuUs: 0, plannerNs: 0, pumpNs: 0, planNs: [], unassigned: 0, capped: false }
  const budgetNs = o.budgetMs * 1e6
  const unfinished = new Set(jobs)

  const finish = (k: number): void => {
    for (let i = 0; i < k && runKeys.length > 0; i++) {
      const at = Math.floor(r() * runKeys.length)
      const key = runKeys[at]
      runKeys[at] = runKeys[runKeys.length - 1]
      runKeys.pop()
      unsetRunning(key)
      const task = tasksByKey.get(key)
      if (task != null) task.state = 'done'
    }
  }

  while (assigned < total) {
    if (mode === 'steady') {
      if (runKeys.length === 0) break
      finish(1)
    }
    const c0 = cpuUs()
    const t0 = process.hrtime.bigint()
    // --- what pump() does before planning
    const busy = new Map<string, number>()
    for (const h of running.values()) busy.set(h, (busy.get(h) ?? 0) + 1)
    const hosts: PlannerHost[] = base.map(h => ({ id: h.id, fingerprint: h.fingerprint, free: SLOTS - (busy.get(h.id) ?? 0) }))
    for (const j of unfinished) if (j.tasks.every(t => t.state === 'done')) unfinished.delete(j)
    const pj: PlannerJob[] = jobs.filter(j => unfinished.has(j)).map(j => ({
      job: j.job, queued: j.tasks.filter(t => t.state === 'queued'), hostsInUse: hostsOf(j.job.id)
    }))
    const usage = new Map<string, number>()
    for (const k of running.keys()) {
      const job = jobById.get(k.slice(0, k.lastIndexOf('#')))
      if (job == null) continue
      const share = shareKey(job)
      usage.set(share, (usage.get(share) ?? 0) + 1)
    }
    const policy: PlanPolicy = { usage, limitsFree: new Map(), weight: () => 1 }
    // ---
    const c1 = cpuUs()
    const t1 = process.hrtime.bigint()
    const plan = planDispatch(pj, hosts, policy)
    const t2 = process.hrtime.bigint()
    const c2 = cpuUs()
    res.plans++
    res.plannerNs += Number(t2 - t1)
    res.pumpNs += Number(t2 - t0)
    res.plannerCpuUs += c2 - c1
    res.pumpCpuUs += c2 - c0
    res.planNs.push(Number(t2 - t1))
    for (const { task, host } of plan) {
      task.state = 'running'
      const k = taskKey(task)
      setRunning(k, host)
      runKeys.push(k)
      tasksByKey.set(k, task)
    }
    res.decisions += plan.length
    assigned += plan.length
    if (mode === 'drain') {
      if (plan.length === 0 && runKeys.length === 0) break // nothing can ever match what is left
      finish(Math.max(1, Math.floor(runKeys.length * 0.1)))
    }
    if (res.pumpNs > budgetNs) { res.capped = assigned < total; break }
  }
  res.unassigned = total - assigned
  return res
}

/** Hosts matching each job's requirements: a job nobody matches never drains. */
function coverage (hostCount: number, seed: number): { min: number, unmatched: number } {
  const hosts = makeHosts(hostCount, seed)
  const counts = REQUIREMENTS.map(req => { const rs = parseRequirements(req); return hosts.filter(h => matchesRequirements(h.fingerprint, rs)).length })
  return { min: Math.min(...counts), unmatched: counts.filter(c => c === 0).length }
}

interface Rates { planner: number, pump: number, plannerWall: number, pumpWall: number, decisions: number, plans: number, p50us: number | null, p99us: number | null, capped: boolean, unassigned: number }

function rates (results: SimResult[]): Rates {
  const perS = (d: number, us: number): number => us > 0 ? d / (us / 1e6) : NaN
  const planNs = results.flatMap(x => x.planNs)
  return {
    planner: median(results.map(x => perS(x.decisions, x.plannerCpuUs))) ?? 0,
    pump: median(results.map(x => perS(x.decisions, x.pumpCpuUs))) ?? 0,
    plannerWall: median(results.map(x => perS(x.decisions, x.plannerNs / 1000))) ?? 0,
    pumpWall: median(results.map(x => perS(x.decisions, x.pumpNs / 1000))) ?? 0,
    decisions: results[0].decisions,
    plans: results[0].plans,
    p50us: (quantile(planNs, 0.5) ?? 0) / 1000,
    p99us: (quantile(planNs, 0.99) ?? 0) / 1000,
    capped: results.some(x => x.capped),
    unassigned: Math.max(...results.map(x => x.unassigned))
  }
}

/**
 * The case fair share makes expensive: many queued jobs of one priority and
 * one free slot that only the last job can use. Each job that cannot take
 * the slot is dropped only after a scan of the whole band for the job most
 * below its share: O(jobs²) for one plan.
 */
function worstSinglePlan (jobCount: number): number {
  const hosts = makeHosts(1_000, 5).map(h => ({ ...h, free: 0 }))
  // a host without blender; every job but the last needs blender
  const target = hosts.find(h => !h.fingerprint.renderers.some(x => x.name === 'blender')) as PlannerHost
  target.free = 1
  const jobs = makeJobs(jobCount, 10, 6, [50])
  jobs.forEach((j, i) => { j.job.requirements = parseRequirements(i === jobs.length - 1 ? ['renderer=command'] : ['blender=*']) })
  const times: number[] = []
  for (let i = 0; i < 5; i++) {
    const pj = jobs.map(j => ({ job: j.job, queued: [...j.tasks], hostsInUse: new Set<string>() }))
    const c0 = cpuUs()
    const plan = planDispatch(pj, hosts, { usage: new Map(), limitsFree: new Map(), weight: () => 1 })
    times.push(cpuUs() - c0)
    if (plan.length !== 1) throw new Error(`worst-case plan: expected 1 assignment, got ${plan.length}`)
  }
  return median(times) ?? NaN
}

const k = (n: number): string => Math.round(n).toLocaleString('en-US')

export const schedulerPlanner: Bench = {
  name: 'scheduler-planner',
  aliases: ['planner', 'scheduler'],
  title: 'scheduler-planner: planDispatch, 10,000 queued frames × synthetic hosts (issue 3)',
  async run (o: BenchOptions): Promise<BenchResult> {
    const reps = o.quick ? 1 : 3
    const budgetMs = o.quick ? 1_500 : 4_000
    const sizes = [100, 1_000, 10_000]
    const notes: string[] = []
    // warm the JIT on a small farm
    simulate('drain', 200, { jobs: 20, framesPerJob: 100, seed: 99, budgetMs: 2_000 })
    simulate('steady', 200, { jobs: 20, framesPerJob: 100, seed: 99, budgetMs: 2_000 })

    const line = (label: string, rt: Rates): void => {
      o.log(`  ${label}: ${k(rt.planner).padStart(9)} decisions/CPU-s planner, ${k(rt.pump).padStart(9)} pump-equivalent (wall: ${k(rt.plannerWall)} / ${k(rt.pumpWall)}); ${rt.decisions} decisions in ${rt.plans} plans; plan p50 ${rt.p50us?.toFixed(0)} µs p99 ${rt.p99us?.toFixed(0)} µs${rt.capped ? ' (time budget hit: rate from a sample)' : ''}${rt.unassigned > 0 && !rt.capped ? ` (${rt.unassigned} frames no host matches)` : ''}`)
    }
    const table = new Map<string, Rates>()
    for (const n of sizes) {
      const cov = coverage(n, 7)
      if (cov.unmatched > 0) notes.push(`${n} hosts: ${cov.unmatched} requirement set(s) match no host; their frames stay queued`)
      for (const mode of ['drain', 'steady'] as const) {
        const results: SimResult[] = []
        for (let i = 0; i < reps; i++) results.push(simulate(mode, n, { jobs: 20, framesPerJob: 500, seed: 7, budgetMs }))
        const rt = rates(results)
        table.set(`${mode}:${n}`, rt)
        line(`${mode.padEnd(6)} ${k(n).padStart(6)} hosts, 20 jobs`, rt)
      }
    }
    // the same 10,000 frames in more, smaller jobs: per-job costs in every plan
    const jobScaling = new Map<string, Rates>()
    for (const [jobs, frames] of [[200, 50], [1_000, 10]] as const) {
      for (const mode of ['drain', 'steady'] as const) {
        const rt = rates([simulate(mode, 1_000, { jobs, framesPerJob: frames, seed: 11, budgetMs })])
        jobScaling.set(`${mode}:${jobs}`, rt)
        line(`${mode.padEnd(6)}  1,000 hosts, ${k(jobs)} jobs × ${frames}`, rt)
      }
    }
    const worst = [100, 1_000, 3_000].map(j => ({ jobs: j, us: worstSinglePlan(j) }))
    o.log(`  one plan, one free slot only the last of N same-priority jobs fits: ${worst.map(w => `${k(w.jobs)} jobs ${(w.us / 1000).toFixed(2)} ms`).join(', ')}`)

    const get = (key: string): Rates => table.get(key) as Rates
    const fig = (label: string, v: number, target = false, headline = false): Figure => ({ label, value: v, unit: 'decisions/s', digits: 0, ...(target ? { target: { op: '>=' as const, value: TARGET_PER_S } } : {}), headline })
    const figures: Figure[] = [
      fig('1,000 hosts, drain, planner', get('drain:1000').planner, true, true),
      fig('1,000 hosts, steady (1 slot frees), planner', get('steady:1000').planner, true, true),
      fig('1,000 hosts, steady, pump-equivalent', get('steady:1000').pump, true, true),
      fig('1,000 hosts, drain, pump-equivalent', get('drain:1000').pump, true)
    ]
    for (const mode of ['drain', 'steady'] as const) {
      for (const n of sizes) {
        const rt = get(`${mode}:${n}`)
        figures.push({ label: `scaling ${mode}: ${k(n)} hosts, planner / pump-eq.`, value: rt.planner, unit: `/ ${k(rt.pump)} decisions/s`, digits: 0 })
      }
      figures.push({ label: `scaling ${mode}: planner rate 100 → 10,000 hosts`, value: get(`${mode}:10000`).planner / get(`${mode}:100`).planner, unit: '× (1.0 = flat)', digits: 3 })
    }
    for (const n of sizes) {
      const rt = get(`steady:${n}`)
      figures.push({ label: `steady ${k(n)} hosts: one plan, p50 / p99 (wall)`, value: rt.p50us, unit: `µs / ${rt.p99us?.toFixed(0)} µs`, digits: 0 })
    }
    for (const [key, rt] of jobScaling) {
      const [mode, jobs] = key.split(':')
      figures.push({ label: `${mode}, 1,000 hosts, ${k(Number(jobs))} jobs: planner / pump-eq.`, value: rt.planner, unit: `/ ${k(rt.pump)} decisions/s`, digits: 0 })
    }
    for (const w of worst) figures.push({ label: `worst plan: 1 free slot, ${k(w.jobs)} jobs, only last fits`, value: w.us / 1000, unit: 'ms CPU', digits: 2 })
    const capped = [...table.entries(), ...jobScaling.entries()].filter(([, v]) => v.capped).map(([key]) => key)
    if (capped.length > 0) notes.push(`stopped at the ${budgetMs / 1000} s time budget before all 10,000 frames were assigned (rate from the sample): ${capped.join(', ')}`)
    notes.push(`rates are decisions per CPU-second of this process (process.cpuUsage), so other load on the machine does not count against the planner; wall-clock rates are in the log lines`)
    notes.push(`median of ${reps} run(s) each; hosts have 4 slots; drain frees 10 % of running frames between plans; steady starts with every slot busy and frees one per plan; pump-equivalent mirrors SchedulerRole.pump's input building (busy counts and fair-share usage from scans of the running map, hosts in use per job from a maintained job → hosts map), not its persistence or RPCs`)
    return { name: this.name, title: this.title, figures, notes }
  }
}
