/**
 * Real farmesh nodes for integration tests: each node is a `farmesh start`
 * process (the built CLI, `dist/cli/main.js`) running on a namespace host from
 * `netns.ts`, or on loopback through `localHost()`. A `Farm` owns the nodes
 * and their temporary data directories and tears all of it down in
 * `destroy()`; every node's stderr is kept so a failing test can print it.
 *
 * The node's API listens on 127.0.0.1 *of its own namespace*, so every CLI
 * command against a node runs inside that node's namespace (`node.cli()`).
 *
 * Needs `npx tsc -p tsconfig.json` first (the CLI is run from `dist/`).
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import fs from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach } from 'vitest';
import type { ExecOptions, ExecResult, NetnsNode, SpawnOpts } from './netns.js';
import { collect } from './netns.js';
import { waitFor } from './wait.js';
import { onJsonLines } from './json-lines.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(REPO_ROOT, 'dist/cli/main.js');
export const FIXTURES = path.join(REPO_ROOT, 'test/fixtures');

/** `farmesh hosts --json` entries (the keys scripts rely on). */
export interface HostSummary {
  id: string;
  hostname: string;
  site: string;
  slots: { total: number; busy: number };
  renderers: Array<{ name: string; version: string }>;
  scheduler: boolean;
  addresses: string[];
  [key: string]: unknown;
}

/** `farmesh status --json`. */
export interface NodeStatus {
  peerId: string;
  site: string;
  hostname: string;
  addresses: string[];
  peers: string[];
  slots: { total: number; busy: number };
  scheduler: string | null;
  hosts: number;
  api: string;
  [key: string]: unknown;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StartOptions {
  site: string;
  /** Extra `start` flags (`--no-mdns`, `--peer MA`, `--slots 2`, …). */
  args?: string[];
  /** Default `/ip4/0.0.0.0/tcp/0` (use 127.0.0.1 on loopback). */
  listen?: string;
  /** Reuse a data directory (restart); default a fresh temp dir. */
  dir?: string;
  /** Pass `--quiet` (default true). Errors are logged either way. */
  quiet?: boolean;
  /** Label in logs (default the host's name plus a counter). */
  label?: string;
  env?: NodeJS.ProcessEnv;
  /** How long until the API must answer (default 30 s). */
  readyTimeoutMs?: number;
}

// ---------------------------------------------------------------------------
// Running commands on loopback (the root namespace)
// ---------------------------------------------------------------------------

const localGroups = new Set<number>();
let localHookInstalled = false;

function killGroup(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch {
    // gone
  }
}

/**
 * A `NetnsNode` for the machine itself, for tests that need no LAN. Children
 * get their own process group and are killed when the test process exits.
 * Nodes started here must use `--no-mdns` and listen on 127.0.0.1: they are
 * on the machine's real network.
 */
export function localHost(): NetnsNode {
  if (!localHookInstalled) {
    localHookInstalled = true;
    process.on('exit', () => {
      for (const pgid of localGroups) killGroup(pgid, 'SIGKILL');
    });
  }
  const spawnLocal = (cmd: string, args: string[] = [], opts: SpawnOpts = {}): ChildProcess => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: opts.stdio ?? 'pipe',
      detached: true,
    });
    const pgid = child.pid;
    if (pgid !== undefined) {
      localGroups.add(pgid);
      child.once('exit', () => localGroups.delete(pgid));
    }
    return child;
  };
  return {
    name: 'localhost',
    hostname: os.hostname(),
    spawn: spawnLocal,
    exec: (cmd, args = [], opts = {}) => collect(spawnLocal(cmd, args, { env: opts.env, cwd: opts.cwd }), `${cmd} ${args.join(' ')}`, opts),
  };
}


// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

/** Runs `farmesh ARGS` on `host` (inside its namespace). Never throws on a non-zero exit. */
export function runCli(host: NetnsNode, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return host.exec(process.execPath, [CLI, ...args], { timeoutMs: 20_000, ...opts });
}

/** `runCli` that expects exit 0 and JSON on stdout. */
export async function runCliJson<T>(host: NetnsNode, args: string[], opts: ExecOptions = {}): Promise<T> {
  const r = await runCli(host, [...args, '--json'], opts);
  if (r.code !== 0) throw new Error(`farmesh ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`farmesh ${args.join(' ')}: not JSON: ${r.stdout.slice(0, 500)}`);
  }
}

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One `farmesh start` process. */
export class FarmNode {
  /** stderr (and stdout) of this process. */
  output = '';
  /** Set once the process has exited. */
  exitInfo: ExitInfo | undefined;
  readonly exited: Promise<ExitInfo>;
  /** Date.now() when the process was spawned / when its API first answered. */
  readonly spawnedAt = Date.now();
  readyAt = 0;
  peerId = '';
  apiUrl = '';

  constructor(
    readonly farm: Farm,
    readonly host: NetnsNode,
    readonly dir: string,
    readonly label: string,
    readonly opts: StartOptions,
    readonly proc: ChildProcess,
  ) {
    const append = (d: string) => {
      this.output += d;
    };
    proc.stdout?.setEncoding('utf8').on('data', append);
    proc.stderr?.setEncoding('utf8').on('data', append);
    this.exited = new Promise((resolve) => {
      proc.once('error', (err) => {
        this.exitInfo ??= { code: null, signal: null };
        append(`[harness] spawn failed: ${err.message}\n`);
        resolve(this.exitInfo);
      });
      proc.once('close', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** `farmesh ARGS --data DIR` inside this node's namespace. */
  cli(args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return runCli(this.host, [...args, '--data', this.dir], opts);
  }

  cliJson<T>(args: string[], opts: ExecOptions = {}): Promise<T> {
    return runCliJson<T>(this.host, [...args, '--data', this.dir], opts);
  }

  hosts(): Promise<HostSummary[]> {
    return this.cliJson<HostSummary[]>(['hosts']);
  }

  async hostIds(): Promise<string[]> {
    return (await this.hosts()).map((h) => h.id).sort();
  }

  status(): Promise<NodeStatus> {
    return this.cliJson<NodeStatus>(['status']);
  }

  /** This node's libp2p address on the LAN (not loopback), with /p2p/. */
  async lanAddress(ip?: string): Promise<string> {
    const addrs = (await this.status()).addresses;
    const want = ip ?? (this.host as { ip?: string }).ip;
    const found = addrs.find((a) => (want ? a.startsWith(`/ip4/${want}/tcp/`) : !a.startsWith('/ip4/127.')));
    if (!found) throw new Error(`${this.label}: no address on ${want ?? 'the LAN'} in ${addrs.join(' ')}`);
    return found;
  }

  /** Resolves once api.json names this process and the API answers. */
  async waitReady(timeoutMs = this.opts.readyTimeoutMs ?? 30_000): Promise<this> {
    const apiInfo = path.join(this.dir, 'api.json');
    const ready = waitFor(
      async () => {
        if (!this.running) throw new Error(`exited with ${JSON.stringify(this.exitInfo)}`);
        const info = JSON.parse(await readFile(apiInfo, 'utf8')) as { url: string; pid: number; peerId: string };
        // after a kill -9 the previous process's api.json is still there
        if (info.pid !== this.pid) return false;
        const status = await this.status();
        if (status.peerId !== info.peerId) throw new Error(`status names ${status.peerId}, api.json ${info.peerId}`);
        this.peerId = info.peerId;
        this.apiUrl = info.url;
        return true;
      },
      { timeoutMs, intervalMs: 200, message: `${this.label} API on ${this.dir}` },
    );
    // stop waiting as soon as the process dies
    const died = this.exited.then((e) => {
      throw new Error(`${this.label} exited (${JSON.stringify(e)}) before its API answered:\n${this.output}`);
    });
    await Promise.race([ready, died]);
    died.catch(() => undefined);
    this.readyAt = Date.now();
    return this;
  }

  /** Sends a signal to the node process itself. */
  signal(sig: NodeJS.Signals): void {
    if (this.running) this.proc.kill(sig);
  }

  /**
   * Clean stop: SIGTERM, then wait for the exit. After `timeoutMs` the node
   * is killed and `timedOut` is set (a node that will not stop is a bug).
   */
  async stop(timeoutMs = 10_000): Promise<ExitInfo & { timedOut: boolean; ms: number }> {
    const t0 = Date.now();
    if (!this.running) return { ...this.exitInfo!, timedOut: false, ms: 0 };
    this.signal('SIGTERM');
    const timedOut = await Promise.race([this.exited.then(() => false), sleep(timeoutMs).then(() => true)]);
    if (timedOut) await this.kill();
    return { ...this.exitInfo!, timedOut, ms: Date.now() - t0 };
  }

  /** kill -9, and wait until the process is gone. */
  async kill(): Promise<ExitInfo> {
    this.signal('SIGKILL');
    return this.exited;
  }

  /** A new process on the same data directory (the old one must be gone). */
  async restart(overrides: Partial<StartOptions> = {}): Promise<FarmNode> {
    if (this.running) throw new Error(`${this.label} is still running`);
    return this.farm.start(this.host, { ...this.opts, label: this.label, ...overrides, dir: this.dir });
  }

  /** Follows this node's resource table (see HostsWatcher). */
  watchHosts(intervalMs = 100): HostsWatcher {
    const w = new HostsWatcher(this.host, this.dir, `${this.label} table`, intervalMs);
    this.farm.track(w);
    return w;
  }
}

// ---------------------------------------------------------------------------
// Watching a node's table with a fine clock
// ---------------------------------------------------------------------------

/**
 * Polls GET /v1/hosts (as the CLI does: api.json + api.token) every
 * `intervalMs` from inside the namespace and prints a line whenever the set
 * of host ids changes. Much cheaper than a CLI run per poll (a CLI run costs
 * ~0.5 s of CPU), so timings are accurate to about the interval. api.json is
 * re-read on every poll, so the watcher follows a node through restarts.
 */
const WATCH_SCRIPT = `
import { readFileSync } from 'node:fs';
const [dir, every] = [process.argv[1], Number(process.argv[2])];
process.stdin.on('end', () => process.exit(0)).resume();
process.stdout.on('error', () => process.exit(0));
let last;
for (;;) {
  let line;
  try {
    const info = JSON.parse(readFileSync(dir + '/api.json', 'utf8'));
    const token = readFileSync(dir + '/api.token', 'utf8').trim();
    const res = await fetch(info.url + '/v1/hosts', { headers: { authorization: 'Bearer ' + token }, signal: AbortSignal.timeout(2000) });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    line = { ids: (await res.json()).map((h) => h.id).sort() };
  } catch (e) {
    line = { error: String(e?.cause?.code ?? e?.message ?? e) };
  }
  const key = JSON.stringify(line);
  if (key !== last) {
    last = key;
    process.stdout.write(JSON.stringify({ t: Date.now(), ...line }) + '\\n');
  }
  await new Promise((r) => setTimeout(r, every));
}
`;

export interface TableEvent {
  /** Date.now() (same clock as the test) when this state was observed. */
  t: number;
  ids?: string[];
  error?: string;
}

export class HostsWatcher {
  readonly events: TableEvent[] = [];
  private readonly proc: ChildProcess;
  private readonly listeners = new Set<() => void>();

  constructor(
    host: NetnsNode,
    dir: string,
    readonly label: string,
    intervalMs: number,
  ) {
    this.proc = host.spawn(process.execPath, ['--input-type=module', '-e', WATCH_SCRIPT, dir, String(intervalMs)]);
    onJsonLines<TableEvent>(this.proc.stdout, (e) => {
      this.events.push(e);
      for (const l of this.listeners) l();
    });
    this.proc.stderr?.resume();
  }

  /** The last observed ids (undefined until the first answer, or while the API is down). */
  get ids(): string[] | undefined {
    for (let i = this.events.length - 1; i >= 0; i--) {
      const e = this.events[i]!;
      if (e.ids) return e.ids;
      if (e.error) return undefined;
    }
    return undefined;
  }

  /** Every id this node ever listed while watched. */
  everListed(): Set<string> {
    return new Set(this.events.flatMap((e) => e.ids ?? []));
  }

  /**
   * Resolves with the time of the first observation, at or after `since`,
   * whose ids satisfy `pred` (so an earlier state never counts).
   */
  until(pred: (ids: string[]) => boolean, opts: { since?: number; timeoutMs: number; message?: string }): Promise<TableEvent> {
    const since = opts.since ?? 0;
    const find = (): TableEvent | undefined => {
      // the state current at `since` (last event at or before it) counts too
      let i = this.events.length - 1;
      while (i >= 0 && this.events[i]!.t > since) i--;
      const atSince = i >= 0 ? this.events[i] : undefined;
      if (atSince?.ids && pred(atSince.ids)) return { ...atSince, t: since };
      return this.events.slice(i + 1).find((e) => e.ids !== undefined && pred(e.ids));
    };
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = find();
        if (!hit) return;
        done();
        resolve(hit);
      };
      const timer = setTimeout(() => {
        done();
        const tail = this.events.slice(-5).map((e) => JSON.stringify(e)).join('\n  ');
        reject(new Error(`${this.label}: timed out after ${opts.timeoutMs} ms waiting for ${opts.message ?? 'condition'}; last events:\n  ${tail}`));
      }, opts.timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  close(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------------------
// A farm: the nodes of one test file
// ---------------------------------------------------------------------------

export class Farm {
  readonly nodes: FarmNode[] = [];
  private readonly dirs = new Set<string>();
  private readonly watchers = new Set<HostsWatcher>();
  private counter = 0;

  /** A fresh, empty temp directory, removed by destroy(). */
  async tempDir(label = 'node'): Promise<string> {
    const dir = await mkdtemp(path.join(os.tmpdir(), `farmesh-${label.replace(/[^\w.-]/g, '_')}-`));
    this.dirs.add(dir);
    return dir;
  }

  /** Spawns `farmesh start` on `host` without waiting for it. */
  async spawn(host: NetnsNode, opts: StartOptions): Promise<FarmNode> {
    const label = opts.label ?? `${host.name}#${++this.counter}`;
    const dir = opts.dir ?? (await this.tempDir(label));
    const args = [CLI, 'start', '--data', dir, '--site', opts.site, '--listen', opts.listen ?? '/ip4/0.0.0.0/tcp/0'];
    if (opts.quiet !== false) args.push('--quiet');
    args.push(...(opts.args ?? []));
    const stdio: StdioOptions = ['ignore', 'pipe', 'pipe'];
    const proc = host.spawn(process.execPath, args, { env: opts.env, stdio });
    const node = new FarmNode(this, host, dir, label, { ...opts, label }, proc);
    this.nodes.push(node);
    return node;
  }

  /** Spawns a node and waits until its API answers. */
  async start(host: NetnsNode, opts: StartOptions): Promise<FarmNode> {
    const node = await this.spawn(host, opts);
    return node.waitReady();
  }

  track(w: HostsWatcher): void {
    this.watchers.add(w);
  }

  /** Every node's output, for a failing test. */
  logs(): string {
    return this.nodes
      .map((n) => `----- ${n.label} pid ${n.pid} ${n.peerId || '(no peer id)'} ${n.dir} exit ${JSON.stringify(n.exitInfo ?? 'running')}\n${n.output || '(no output)\n'}`)
      .join('');
  }

  printLogs(why: string): void {
    console.error(`\n===== farmesh node logs (${why}) =====\n${this.logs()}===== end of node logs =====`);
  }

  /** Prints every node's log after each failed test of the calling file/suite. */
  printLogsOnFailure(): void {
    afterEach((ctx) => {
      if (ctx.task.result?.state === 'fail') this.printLogs(`failed: ${ctx.task.name}`);
    });
  }

  /** Runs `fn` (a beforeAll body, say) and prints the logs if it throws. */
  async withLogs<T>(why: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      this.printLogs(why);
      throw error;
    }
  }

  /** Stops every node (SIGTERM, then SIGKILL), closes watchers, removes the data dirs. */
  async destroy(graceMs = 5_000): Promise<void> {
    for (const w of this.watchers) w.close();
    this.watchers.clear();
    await Promise.all(this.nodes.map((n) => n.stop(graceMs).catch(() => undefined)));
    for (const dir of this.dirs) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    this.dirs.clear();
  }
}

/** Sanity check before any test: the CLI must have been built. */
export function assertBuilt(): void {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npx tsc -p tsconfig.json first`);
}
