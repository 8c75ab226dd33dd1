import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { waitFor } from '../harness/wait.js'

/**
 * A farmesh node on loopback for tests that need no LAN: explicit peers only,
 * never mDNS (multicast must not reach the machine's real interface).
 */
export const CLI = resolve('dist/cli/main.js')
const run = promisify(execFile)

export interface LoopbackNode { proc: ChildProcess, data: string, log: string[], cli: (...args: string[]) => Promise<{ stdout: string, stderr: string, code: number }>, stop: () => Promise<void> }

export async function startLoopbackNode (extra: string[] = [], data?: string, env: NodeJS.ProcessEnv = {}): Promise<LoopbackNode> {
  const dir = data ?? await mkdtemp(join(tmpdir(), 'farmesh-test-'))
  const proc = spawn(process.execPath, [CLI, 'start', '--data', dir, '--no-mdns', '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '127.0.0.1:0', ...extra], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } })
  const log: string[] = []
  proc.stderr?.on('data', (b: Buffer) => { log.push(...b.toString().split('\n').filter(Boolean)) })
  const cli = async (...args: string[]): Promise<{ stdout: string, stderr: string, code: number }> => {
    try {
      const r = await run(process.execPath, [CLI, ...args, '--data', dir])
      return { ...r, code: 0 }
    } catch (err: any) {
      return { stdout: err.stdout ?? '', stderr: err.stderr ?? '', code: err.code ?? 1 }
    }
  }
  const stop = async (): Promise<void> => {
    if (proc.exitCode == null && proc.signalCode == null) {
      const exited = new Promise(resolve => proc.once('exit', resolve))
      proc.kill('SIGTERM')
      const t = setTimeout(() => proc.kill('SIGKILL'), 5_000)
      await exited
      clearTimeout(t)
    }
    if (data == null) await rm(dir, { recursive: true, force: true })
  }
  await waitFor(async () => {
    if (proc.exitCode != null) throw new Error(`node exited: ${log.join('\n')}`)
    const info = JSON.parse(await readFile(join(dir, 'api.json'), 'utf8'))
    return info.pid === proc.pid ? (await cli('status', '--json')).code === 0 : false
  }, { timeoutMs: 20_000, message: 'node to start' })
  return { proc, data: dir, log, cli, stop }
}
