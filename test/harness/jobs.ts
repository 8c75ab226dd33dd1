/**
 * Job helpers for integration tests on top of `farm.ts`: submit through the
 * CLI, follow a job until it ends, read the outputs at its origin, and find a
 * job's render processes on the namespace hosts.
 */
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { FarmNode } from './farm.js';
import type { NetnsNode } from './netns.js';
import { waitFor } from './wait.js';

export type JobState = 'queued' | 'active' | 'done' | 'failed' | 'killed';
export type TaskState = 'queued' | 'running' | 'done' | 'failed';

/** `farmesh job ID --json` (the keys the tests use). */
export interface JobView {
  id: string;
  name: string;
  state: JobState;
  priority: number;
  origin: string;
  reason?: string;
  excludedHosts: string[];
  submittedAt: number;
  startedAt?: number;
  finishedAt?: number;
  frames: Array<{ frame: number; state: TaskState; host: string | null; attempts: number; error?: string }>;
  tasks: Array<{
    index: number;
    frames: number[];
    state: TaskState;
    host: string | null;
    attempts: number;
    errors: string[];
    /** when the scheduler sent this attempt to its host (absent from older nodes) */
    dispatchedAt?: number | null;
    /** when the host reported it started rendering */
    startedAt: number | null;
    finishedAt: number | null;
    stats: { wallSeconds: number; cpuSeconds: number } | null;
    /** false while a done frame's output waits at its host for the origin (newer nodes) */
    delivered?: boolean;
  }>;
  [key: string]: unknown;
}

/** One entry of `farmesh jobs --json`. */
export interface JobSummary {
  id: string;
  name: string;
  state: JobState;
  priority: number;
  frames: { total: number; done: number; running: number; failed: number; queued: number };
  [key: string]: unknown;
}

/** `farmesh submit … --json`, expecting success. */
export async function submit(node: FarmNode, args: string[]): Promise<{ id: string; frames: number; tasks: number; matchingHosts: number }> {
  return node.cliJson(['submit', ...args]);
}

export function jobView(node: FarmNode, id: string): Promise<JobView> {
  return node.cliJson<JobView>(['job', id]);
}

export function listJobs(node: FarmNode): Promise<JobSummary[]> {
  return node.cliJson<JobSummary[]>(['jobs']);
}

/** Polls `farmesh job ID` on `node` until `pred` holds; returns that view. */
export function waitForJob(
  node: FarmNode,
  id: string,
  pred: (j: JobView) => boolean,
  opts: { timeoutMs: number; message?: string; intervalMs?: number },
): Promise<JobView> {
  return waitFor(
    async () => {
      const j = await jobView(node, id);
      return pred(j) ? j : false;
    },
    { timeoutMs: opts.timeoutMs, intervalMs: opts.intervalMs ?? 500, message: opts.message ?? `job ${id}` },
  );
}

/** Waits until the job has ended (done, failed or killed); returns its final view. */
export function waitForJobEnd(node: FarmNode, id: string, timeoutMs: number): Promise<JobView> {
  return waitForJob(node, id, (j) => j.state === 'done' || j.state === 'failed' || j.state === 'killed', {
    timeoutMs,
    message: `job ${id} to end`,
  });
}

/** The job's output directory at its origin node. */
export function outputDir(origin: FarmNode, id: string): string {
  return path.join(origin.dir, 'outputs', id);
}

/** Output file names at the origin (sorted; temp files of copies still arriving left out). */
export async function outputNames(origin: FarmNode, id: string): Promise<string[]> {
  const names = await readdir(outputDir(origin, id)).catch(() => [] as string[]);
  return names.filter((n) => !n.startsWith('.') && !n.endsWith('.tmp')).sort();
}

export async function readOutput(origin: FarmNode, id: string, name: string): Promise<Buffer> {
  return readFile(path.join(outputDir(origin, id), name));
}

/** `frame_0001.png` … for frames first..last. */
export function frameNames(first: number, last: number): string[] {
  return Array.from({ length: last - first + 1 }, (_, i) => `frame_${String(first + i).padStart(4, '0')}.png`);
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

export interface ProcInfo {
  pid: number;
  /** inode of the process's network namespace */
  netns: number;
  argv: string[];
}

/**
 * Every process (other than this one) whose argv contains `marker`. The
 * namespace hosts share the machine's pid namespace, so one scan of /proc
 * sees every host; `netns` says which host a process runs on (see
 * `netnsInode`). Zombies count as gone.
 */
export function processesWith(marker: string): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').filter(Boolean);
      if (!argv.some((a) => a.includes(marker))) continue;
      if (/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${name}/stat`, 'utf8'))) continue;
      const link = readlinkSync(`/proc/${name}/ns/net`); // net:[4026532345]
      out.push({ pid: Number(name), netns: Number(/\[(\d+)\]/.exec(link)?.[1] ?? -1), argv });
    } catch {
      // exited while we looked
    }
  }
  return out;
}

/** Inode of a namespace host's network namespace (compare with ProcInfo.netns). */
export function netnsInode(host: NetnsNode): number {
  return statSync(`/run/netns/${host.name}`).ino;
}
