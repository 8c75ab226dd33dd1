/**
 * Helpers for fault-injection tests on top of `netns.ts`, `farm.ts` and
 * `jobs.ts`: a farm of N namespace hosts that can lose hosts (kill -9 of the
 * node *and* the renders it started, as when a machine dies), restart them on
 * the same data directory, and be asked cheaply and often what each node
 * thinks (an API agent per host instead of a CLI run per question); jobs of
 * slow but real frames (test/fixtures/slow-frame.mjs) whose renders are
 * logged on the shared file system; a reference render and a pixel check of
 * a job's outputs at its origin; and a recorder of the scheduler's dispatches.
 *
 * Needs root and `npx tsc -p tsconfig.json` first (everything runs from dist/).
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { Farm, FIXTURES, REPO_ROOT, type FarmNode, type HostSummary, type NodeStatus } from './farm.js';
import { frameNames, processesWith } from './jobs.js';
import { createLan, type Host, type Lan, type NetnsNode } from './netns.js';
import { waitFor } from './wait.js';
import { onJsonLines } from './json-lines.js';

const execFileAsync = promisify(execFile);

export const SLOW_FRAME = path.join(FIXTURES, 'slow-frame.mjs');
export const STALE_DISPATCH = path.join(FIXTURES, 'stale-dispatch.mjs');
export const BUILTIN_CLI = path.join(REPO_ROOT, 'dist/node/renderers/builtin-cli.js');
const PNG_JS = path.join(REPO_ROOT, 'dist/node/renderers/png.js');
const DEMO_SCENE_JS = path.join(REPO_ROOT, 'dist/node/renderers/demo-scene.js');

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1]! + s[m]!) / 2;
}

export function maxOf(xs: number[]): number | undefined {
  return xs.length === 0 ? undefined : Math.max(...xs);
}

/** "median 812 ms, max 1.3 s (n=4)" */
export function describeTimes(xs: number[]): string {
  if (xs.length === 0) return 'no samples';
  return `median ${Math.round(median(xs)!)} ms, max ${Math.round(maxOf(xs)!)} ms (n=${xs.length})`;
}

// ---------------------------------------------------------------------------
// API agent: one long-lived process per namespace host answering API calls
// ---------------------------------------------------------------------------

/**
 * Reads `{id, dir, method, path, body, timeoutMs}` lines on stdin, calls the
 * API of the node owning data directory `dir` (api.json + api.token are read
 * on every call, so it follows a node through restarts), and answers one
 * `{id, status, body}` or `{id, error}` line. A CLI run costs ~0.5 s of CPU;
 * this costs a fetch.
 */
const AGENT_SCRIPT = `
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
const rl = createInterface({ input: process.stdin });
process.stdout.on('error', () => process.exit(0));
rl.on('close', () => process.exit(0));
rl.on('line', async (line) => {
  let req;
  try { req = JSON.parse(line); } catch { return; }
  let out;
  try {
    const info = JSON.parse(readFileSync(req.dir + '/api.json', 'utf8'));
    const token = readFileSync(req.dir + '/api.token', 'utf8').trim();
    const headers = { authorization: 'Bearer ' + token };
    if (req.body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(info.url + req.path, {
      method: req.method ?? 'GET', headers,
      body: req.body === undefined ? undefined : JSON.stringify(req.body),
      signal: AbortSignal.timeout(req.timeoutMs ?? 5000),
    });
    const text = await res.text();
    let body;
    try { body = text === '' ? undefined : JSON.parse(text); } catch { body = { error: text }; }
    out = { id: req.id, status: res.status, body };
  } catch (e) {
    out = { id: req.id, error: String(e?.cause?.code ?? e?.name ?? '') + ': ' + String(e?.message ?? e) };
  }
  process.stdout.write(JSON.stringify(out) + '\\n');
});
`;

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export class ApiAgent {
  private readonly proc: ChildProcess;
  private readonly pending = new Map<number, { resolve: (v: { status?: number; body?: unknown; error?: string }) => void }>();
  private counter = 0;
  private closed = false;

  constructor(readonly host: NetnsNode) {
    this.proc = host.spawn(process.execPath, ['--input-type=module', '-e', AGENT_SCRIPT]);
    onJsonLines<{ id: number; status?: number; body?: unknown; error?: string }>(this.proc.stdout, (msg) => {
      this.pending.get(msg.id)?.resolve(msg);
      this.pending.delete(msg.id);
    });
    this.proc.stderr?.resume();
    this.proc.stdin?.on('error', () => undefined);
    this.proc.once('exit', () => {
      this.closed = true;
      for (const p of this.pending.values()) p.resolve({ error: 'api agent exited' });
      this.pending.clear();
    });
  }

  /** Calls the API of the node on `dir`; throws ApiError on an HTTP error, Error when it does not answer. */
  async call<T>(dir: string, method: string, apiPath: string, body?: unknown, timeoutMs = 5_000): Promise<T> {
    if (this.closed) throw new Error(`api agent on ${this.host.name} is gone`);
    const id = ++this.counter;
    const reply = await new Promise<{ status?: number; body?: unknown; error?: string }>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ error: `no answer within ${timeoutMs + 1000} ms` });
      }, timeoutMs + 1000);
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
      });
      this.proc.stdin?.write(JSON.stringify({ id, dir, method, path: apiPath, body, timeoutMs }) + '\n');
    });
    if (reply.error !== undefined) throw new Error(`${method} ${apiPath} on ${this.host.name}: ${reply.error}`);
    if (reply.status === undefined || reply.status >= 400) {
      const msg = (reply.body as { error?: string } | undefined)?.error ?? `HTTP ${reply.status}`;
      throw new ApiError(`${method} ${apiPath} on ${this.host.name}: ${msg}`, reply.status ?? 0);
    }
    return reply.body as T;
  }

  close(): void {
    this.closed = true;
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------------------
// A farm that loses hosts
// ---------------------------------------------------------------------------

export interface ClusterOptions {
  hosts: number;
  site: string;
  /** slots per node (default 2) */
  slots?: number;
  /** extra `start` flags for every node */
  args?: string[];
  /** log lines (default: none) */
  log?: (line: string) => void;
  /** pass `--quiet` to the nodes (default true: errors only) */
  quiet?: boolean;
}

/** What one node says about the site: its status and its table. */
export interface NodeView {
  index: number;
  peerId: string;
  scheduler: string | null;
  term: number;
  hostIds: string[];
  /** hosts its table marks `scheduler: true` */
  flagged: string[];
}

export class Cluster {
  readonly farm = new Farm();
  lan!: Lan;
  hosts: Host[] = [];
  /** the current process of each host (replaced by restarts) */
  nodes: FarmNode[] = [];
  /** peer id of each host (kept across restarts: same data directory) */
  ids: string[] = [];
  agents: ApiAgent[] = [];
  /** processes we killed or stopped on purpose */
  private readonly intended = new Set<FarmNode>();
  private destroyed = false;

  private constructor(readonly opts: ClusterOptions) {}

  /**
   * A LAN of `hosts` namespace hosts with a node on each. Node 0 starts
   * first and alone, so it schedules (the election keeps a live scheduler
   * and prefers the longest uptime); the others join it. Resolves once every
   * node lists every host and names node 0 the scheduler.
   */
  static async start(opts: ClusterOptions): Promise<Cluster> {
    const c = new Cluster(opts);
    try {
      c.lan = await createLan({ hosts: opts.hosts });
      c.hosts = c.lan.hosts;
      c.agents = c.hosts.map((h) => new ApiAgent(h));
      c.nodes[0] = await c.startNode(0);
      await waitFor(async () => (await c.status(0)).scheduler === c.ids[0], {
        timeoutMs: 20_000, intervalMs: 200, message: 'node 0 to schedule its one-host site',
      });
      await Promise.all(c.hosts.slice(1).map(async (_, k) => { c.nodes[k + 1] = await c.startNode(k + 1); }));
      await c.waitAgreement(c.hosts.map((_, i) => i), { timeoutMs: 45_000, scheduler: c.ids[0], message: 'every node to list every host, node 0 scheduling' });
      return c;
    } catch (error) {
      c.farm.printLogs(`cluster of ${opts.hosts} did not start`);
      await c.destroy();
      throw error;
    }
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  private async startNode(i: number, dir?: string): Promise<FarmNode> {
    const node = await this.farm.start(this.hosts[i]!, {
      site: this.opts.site,
      label: `n${i}`,
      dir,
      quiet: this.opts.quiet ?? true,
      args: ['--slots', String(this.opts.slots ?? 2), ...(this.opts.args ?? [])],
      readyTimeoutMs: 45_000,
    });
    this.ids[i] = node.peerId;
    return node;
  }

  get size(): number {
    return this.hosts.length;
  }

  indexOf(peerId: string | null | undefined): number {
    return peerId == null ? -1 : this.ids.indexOf(peerId);
  }

  /** `n3` for node 3, for logs. */
  name(peerIdOrIndex: string | number | null | undefined): string {
    const i = typeof peerIdOrIndex === 'number' ? peerIdOrIndex : this.indexOf(peerIdOrIndex);
    return i >= 0 ? `n${i}` : String(peerIdOrIndex);
  }

  alive(i: number): boolean {
    return this.nodes[i]?.running === true;
  }

  live(): number[] {
    return this.hosts.map((_, i) => i).filter((i) => this.alive(i));
  }

  dir(i: number): string {
    return this.nodes[i]!.dir;
  }

  api<T>(i: number, method: string, apiPath: string, body?: unknown, timeoutMs?: number): Promise<T> {
    return this.agents[i]!.call<T>(this.dir(i), method, apiPath, body, timeoutMs);
  }

  status(i: number): Promise<NodeStatus & { term: number }> {
    return this.api(i, 'GET', '/v1/status');
  }

  tableOf(i: number): Promise<Array<HostSummary & { term: number }>> {
    return this.api(i, 'GET', '/v1/hosts');
  }

  async view(i: number): Promise<NodeView> {
    const [s, hosts] = await Promise.all([this.status(i), this.tableOf(i)]);
    return {
      index: i,
      peerId: s.peerId,
      scheduler: s.scheduler,
      term: s.term,
      hostIds: hosts.map((h) => h.id).sort(),
      flagged: hosts.filter((h) => h.scheduler).map((h) => h.id),
    };
  }

  /**
   * The nodes `indices` agree: each names the same scheduler (one of them,
   * flagged in its table) in the same term, and lists exactly those nodes.
   */
  async agreement(indices: number[], scheduler?: string): Promise<{ scheduler: string; term: number; views: NodeView[] } | false> {
    const views = await Promise.all(indices.map((i) => this.view(i)));
    const want = indices.map((i) => this.ids[i]!).sort();
    const first = views[0]!;
    const ok =
      first.scheduler != null &&
      want.includes(first.scheduler) &&
      (scheduler === undefined || first.scheduler === scheduler) &&
      views.every(
        (v) =>
          v.scheduler === first.scheduler &&
          v.term === first.term &&
          JSON.stringify(v.hostIds) === JSON.stringify(want) &&
          JSON.stringify(v.flagged) === JSON.stringify([first.scheduler]),
      );
    return ok ? { scheduler: first.scheduler!, term: first.term, views } : false;
  }

  async waitAgreement(
    indices: number[],
    opts: { timeoutMs: number; scheduler?: string; message?: string },
  ): Promise<{ scheduler: string; term: number; views: NodeView[] }> {
    let last: unknown;
    try {
      return await waitFor(
        async () => {
          const a = await this.agreement(indices, opts.scheduler);
          if (a === false) last = await Promise.all(indices.map((i) => this.view(i).catch((e: Error) => e.message)));
          return a;
        },
        { timeoutMs: opts.timeoutMs, intervalMs: 250, message: opts.message ?? `nodes ${indices.join(',')} to agree` },
      );
    } catch (error) {
      const named = JSON.stringify(last, (k, v) => (typeof v === 'string' && this.indexOf(v) >= 0 ? this.name(v) : v));
      throw new Error(`${(error as Error).message}\nlast views: ${named}`);
    }
  }

  /**
   * The host dies: kill -9 of its node and of every process the node started
   * (renders run in their own process groups and would otherwise finish as
   * orphans). Returns Date.now() just before the kill.
   */
  async killHost(i: number): Promise<number> {
    const node = this.nodes[i]!;
    this.intended.add(node);
    const t = Date.now();
    node.signal('SIGKILL');
    const sweep = () => {
      for (const p of processesWith(node.dir)) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    };
    sweep();
    await node.exited;
    sweep();
    this.log(`killed n${i} (kill -9 of its node and its renders)`);
    return t;
  }

  /** A clean stop (SIGTERM: the node leaves the site). Returns Date.now() before the signal. */
  async stopNode(i: number): Promise<number> {
    const t = Date.now();
    this.intended.add(this.nodes[i]!);
    const r = await this.nodes[i]!.stop(15_000);
    this.log(`stopped n${i} (SIGTERM) in ${r.ms} ms${r.timedOut ? ' — timed out, killed' : ''}`);
    return t;
  }

  /** A new process on the host's data directory (the old one must be gone). */
  async restart(i: number): Promise<FarmNode> {
    const node = await this.nodes[i]!.restart({ readyTimeoutMs: 45_000 });
    this.nodes[i] = node;
    this.log(`restarted n${i}`);
    return node;
  }

  /** Node processes that exited although nobody killed or stopped them (crashes), with their output. */
  unexpectedExits(): string[] {
    const crashed = this.farm.nodes.filter((n) => !n.running && !this.intended.has(n));
    for (const n of crashed) this.intended.add(n); // reported once
    return crashed.map((n) => `${n.label} (pid ${n.pid}) exited ${JSON.stringify(n.exitInfo)}:\n${n.output.slice(-3000)}`);
  }

  /** Restarts every dead node, in parallel. */
  async restartDead(): Promise<void> {
    await Promise.all(this.hosts.map((_, i) => i).filter((i) => !this.alive(i)).map((i) => this.restart(i)));
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const a of this.agents) a.close();
    await this.farm.destroy().catch(() => undefined);
    await this.lan?.destroy().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------
// Slow jobs, references, outputs
// ---------------------------------------------------------------------------

/** Writes the demo scene with `frames` frames to `dir/scene.json`. */
export async function writeScene(dir: string, frames: number): Promise<string> {
  const { demoScene } = (await import(DEMO_SCENE_JS)) as { demoScene: (n: number) => unknown };
  const file = path.join(dir, 'scene.json');
  await writeFile(file, JSON.stringify(demoScene(frames)));
  return file;
}

export interface SlowJob {
  scene: string;
  /** `1-24` */
  frames: string;
  /** wait before rendering, per frame */
  sleepMs: number;
  /** render size (small: the CPU is shared with every host) */
  width: number;
  height: number;
  /** shared render log (see slow-frame.mjs) */
  log: string;
  /** tag in the render log and marker in the render's argv */
  tag: string;
  maxAttempts?: number;
  name?: string;
}

function slowArgv(job: SlowJob): string[] {
  return [process.execPath, SLOW_FRAME, '{scene}', '{frame}', '{output}', `sleep=${job.sleepMs}`, `size=${job.width}x${job.height}`, `log=${job.log}`, `tag=${job.tag}`];
}

/** `farmesh submit` arguments for a slow job (the `command` renderer running slow-frame.mjs). */
export function slowJobArgs(job: SlowJob): string[] {
  return [
    job.scene, '--renderer', 'command', '--frames', job.frames, '--name', job.name ?? job.tag,
    '--max-attempts', String(job.maxAttempts ?? 10),
    ...slowArgv(job).flatMap((a) => ['--arg', a]),
  ];
}

/** The same job as a spec for POST /v1/jobs (what `farmesh submit` sends). */
export function slowJobSpec(job: SlowJob): Record<string, unknown> {
  return { scene: job.scene, renderer: 'command', frames: job.frames, name: job.name ?? job.tag, maxAttempts: job.maxAttempts ?? 10, command: slowArgv(job) };
}

/** Renders frames first..last of `scene` with builtin-cli into `dir` (frame_####.png). */
export async function renderReference(scene: string, first: number, last: number, width: number, height: number, dir: string): Promise<string> {
  await execFileAsync(process.execPath, [BUILTIN_CLI, '--scene', scene, '--start', String(first), '--end', String(last), '--output-dir', dir, '--width', String(width), '--height', String(height)], { maxBuffer: 64 * 1024 * 1024 });
  return dir;
}

let pngModule: Promise<{ decodePng: (b: Buffer) => { width: number; height: number; rgba: Buffer } }> | undefined;
const png = () => (pngModule ??= import(PNG_JS));

/**
 * Problems with a job's outputs at its origin: every frame first..last must
 * be there exactly once (no other file in the directory, each recorded once
 * in the origin's record) and decode to the reference's pixels.
 */
export async function checkOutputs(
  cluster: Cluster,
  origin: number,
  jobId: string,
  frames: number[],
  refDir: string,
): Promise<string[]> {
  const problems: string[] = [];
  const dir = path.join(cluster.dir(origin), 'outputs', jobId);
  const expected = frames.map((f) => frameNames(f, f)[0]!).sort();
  const present = (await readdir(dir).catch(() => [] as string[])).sort();
  const missing = expected.filter((n) => !present.includes(n));
  const extra = present.filter((n) => !expected.includes(n));
  if (missing.length > 0) problems.push(`job ${jobId}: ${missing.length} frame(s) missing at the origin: ${missing.slice(0, 10).join(' ')}`);
  if (extra.length > 0) problems.push(`job ${jobId}: unexpected file(s) at the origin: ${extra.slice(0, 10).join(' ')}`);
  const record = await cluster.api<{ outputs: Record<string, { frame: number }> }>(origin, 'GET', `/v1/jobs/${jobId}/outputs`).catch((e: Error) => e);
  if (record instanceof Error) problems.push(`job ${jobId}: origin record unreadable: ${record.message}`);
  else {
    const names = Object.keys(record.outputs).sort();
    if (JSON.stringify(names) !== JSON.stringify(expected)) problems.push(`job ${jobId}: origin records ${names.length} output(s), expected ${expected.length}`);
    const perFrame = new Map<number, number>();
    for (const o of Object.values(record.outputs)) perFrame.set(o.frame, (perFrame.get(o.frame) ?? 0) + 1);
    const twice = [...perFrame].filter(([, n]) => n > 1).map(([f]) => f);
    if (twice.length > 0) problems.push(`job ${jobId}: frames recorded more than once: ${twice.join(' ')}`);
  }
  const { decodePng } = await png();
  for (const name of expected.filter((n) => present.includes(n))) {
    try {
      const got = decodePng(await readFile(path.join(dir, name)));
      const ref = decodePng(await readFile(path.join(refDir, name)));
      if (got.width !== ref.width || got.height !== ref.height || !got.rgba.equals(ref.rgba)) problems.push(`job ${jobId}: ${name} differs from the reference`);
    } catch (error) {
      problems.push(`job ${jobId}: ${name}: ${(error as Error).message}`);
    }
  }
  return problems;
}

export interface RenderEvent {
  ev: 'start' | 'end';
  tag: string;
  frame: number;
  host: string;
  pid: number;
  t: number;
}

export function readRenderLog(file: string): RenderEvent[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').filter(Boolean).flatMap((l) => {
    try {
      return [JSON.parse(l) as RenderEvent];
    } catch {
      return [];
    }
  });
}

/** Completed renders per frame of `tag`. */
export function rendersPerFrame(events: RenderEvent[], tag: string): Map<number, number> {
  const m = new Map<number, number>();
  for (const e of events) if (e.tag === tag && e.ev === 'end') m.set(e.frame, (m.get(e.frame) ?? 0) + 1);
  return m;
}

// ---------------------------------------------------------------------------
// Following a job's dispatches
// ---------------------------------------------------------------------------

export interface TaskView {
  index: number;
  frames: number[];
  state: 'queued' | 'running' | 'done' | 'failed';
  host: string | null;
  attempts: number;
  dispatchedAt: number | null;
  startedAt: number | null;
  finishedAt: number | null;
  errors: string[];
}

export interface JobViewT {
  id: string;
  state: 'queued' | 'active' | 'done' | 'failed' | 'killed';
  reason?: string;
  term: number;
  origin: string;
  frames: Array<{ frame: number; state: string; host: string | null; attempts: number }>;
  tasks: TaskView[];
}

export interface Dispatch {
  jobId: string;
  index: number;
  host: string | null;
  dispatchedAt: number;
  /** the term of the scheduler that answered */
  term: number;
  /** the node we asked */
  via: number;
  seenAt: number;
}

/**
 * Polls `GET /v1/jobs/:id` (answered by whichever scheduler the asked node
 * follows) every `intervalMs` on the live nodes `ask()` names, and keeps
 * every distinct dispatch it sees (task, dispatchedAt) and the latest view
 * each node gave. A dispatch replaced within one interval is missed; the
 * times are the schedulers' own clocks (one machine: one clock).
 */
export class DispatchRecorder {
  readonly dispatches: Dispatch[] = [];
  readonly latest = new Map<string, { at: number; via: number; view: JobViewT }>();
  private readonly seen = new Set<string>();
  private readonly jobs = new Set<string>();
  private stopped = false;
  private readonly loop: Promise<void>;

  constructor(
    private readonly cluster: Cluster,
    private readonly ask: () => number[],
    private readonly intervalMs = 250,
  ) {
    this.loop = this.run();
  }

  follow(jobId: string): void {
    this.jobs.add(jobId);
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const t0 = Date.now();
      await Promise.all([...this.jobs].flatMap((jobId) => this.ask().map(async (i) => {
        try {
          const view = await this.cluster.api<JobViewT>(i, 'GET', `/v1/jobs/${jobId}`, undefined, 3_000);
          this.record(jobId, i, view);
        } catch {
          // no scheduler right now, node down: ask again
        }
      })));
      await sleep(Math.max(0, this.intervalMs - (Date.now() - t0)));
    }
  }

  record(jobId: string, via: number, view: JobViewT): void {
    const now = Date.now();
    const prev = this.latest.get(`${jobId}@${via}`);
    if (prev === undefined || prev.at <= now) this.latest.set(`${jobId}@${via}`, { at: now, via, view });
    for (const t of view.tasks) {
      if (t.dispatchedAt == null) continue;
      const k = `${jobId}#${t.index}@${t.dispatchedAt}`;
      if (this.seen.has(k)) continue;
      this.seen.add(k);
      this.dispatches.push({ jobId, index: t.index, host: t.host, dispatchedAt: t.dispatchedAt, term: view.term, via, seenAt: now });
    }
  }

  /** The freshest view of a job from any node. */
  freshest(jobId: string): JobViewT | undefined {
    let best: { at: number; view: JobViewT } | undefined;
    for (const [k, v] of this.latest) if (k.startsWith(`${jobId}@`) && (best === undefined || v.at > best.at)) best = v;
    return best?.view;
  }

  /** Tasks (job, index) the freshest views show running on `peerId`. */
  runningOn(peerId: string): Array<{ jobId: string; index: number }> {
    const out: Array<{ jobId: string; index: number }> = [];
    for (const jobId of this.jobs) {
      const v = this.freshest(jobId);
      for (const t of v?.tasks ?? []) if (t.state === 'running' && t.host === peerId) out.push({ jobId, index: t.index });
    }
    return out;
  }

  /** The first dispatch (any job) after `t`, by dispatchedAt. */
  firstAfter(t: number, filter: (d: Dispatch) => boolean = () => true): Dispatch | undefined {
    return this.dispatches.filter((d) => d.dispatchedAt > t && filter(d)).sort((a, b) => a.dispatchedAt - b.dispatchedAt)[0];
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

/** Seeded PRNG (mulberry32): the same seed, the same fault schedule. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
