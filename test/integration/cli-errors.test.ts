/**
 * `farmesh start` failures a person can cause, run as real processes on
 * loopback: each must exit with the documented code (2 usage, 1 runtime)
 * and one line on stderr naming the culprit, with no stack trace unless
 * --debug. Plus the identity key: mode 0600, same peer id across starts,
 * and a corrupt key is refused, never replaced.
 *
 * No namespaces here, so every node runs on the machine's real network:
 * always `--no-mdns` and `--listen /ip4/127.0.0.1/tcp/0`.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, Farm, localHost, runCli, type StartOptions } from '../harness/farm.js';
import type { ExecResult } from '../harness/netns.js';

const local = localHost();
const farm = new Farm();
farm.printLogsOnFailure();
const SITE = `cli-${process.pid}`;
const LOOPBACK = '/ip4/127.0.0.1/tcp/0';
const STACK = /^\s+at .+/m;

/** Safe defaults for any node started here. */
const SAFE: Pick<StartOptions, 'site' | 'listen' | 'args'> = { site: SITE, listen: LOOPBACK, args: ['--no-mdns'] };

/** `farmesh start` that is expected to fail fast (killed after 20 s if it does not). */
function startFails(dir: string, ...extra: string[]): Promise<ExecResult> {
  return runCli(local, ['start', '--data', dir, '--site', SITE, '--listen', LOOPBACK, '--no-mdns', '--quiet', ...extra], { timeoutMs: 20_000 });
}

/** Exactly one line on stderr, no stack trace; returns it. */
function oneLine(r: ExecResult): string {
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, `stderr:\n${r.stderr}`).toHaveLength(1);
  expect(r.stderr).not.toMatch(STACK);
  expect(lines[0]).not.toBe('');
  return lines[0]!;
}

beforeAll(() => assertBuilt());
afterAll(() => farm.destroy());

describe('farmesh start usage errors (exit 2)', () => {
  it.each(['start', 'hosts', 'status', 'init'])('%s: an unknown flag is named', async (command) => {
    const dir = await farm.tempDir('unknown-flag');
    const args = command === 'start' ? ['start', '--data', dir, '--listen', LOOPBACK, '--no-mdns'] : [command, '--data', dir];
    const r = await runCli(local, [...args, '--frobnicate-xyz'], { timeoutMs: 20_000 });
    expect(r.code).toBe(2);
    expect(oneLine(r)).toContain('--frobnicate-xyz');
  });

  it.each([
    ['--listen', 'not-a-multiaddr'],
    ['--listen', '/ip4/999.0.0.1/tcp/0'],
    ['--peer', '/ip4/127.0.0.1/tcp/notaport/p2p/12D3KooWBkG3dmyXoTgPP7V1kySW62YaEPbsfwnnQC6bhKsmxT7j'],
    ['--peer', 'nonsense'],
  ])('a bad multiaddr for %s (%s) is named', async (flag, value) => {
    const dir = await farm.tempDir('bad-ma');
    const r = await startFails(dir, flag, value);
    expect(r.code).toBe(2);
    const line = oneLine(r);
    expect(line).toContain(flag);
    expect(line).toContain(value);
    // nothing was started, so nothing was written
    expect(fs.existsSync(path.join(dir, 'api.json'))).toBe(false);
  });
});

describe('farmesh start runtime errors (exit 1 or non-zero, one line)', () => {
  it('an unusable data dir (a path under a regular file)', async () => {
    const parent = await farm.tempDir('not-a-dir');
    const file = path.join(parent, 'plain-file');
    fs.writeFileSync(file, 'not a directory\n');
    const dir = path.join(file, 'data');
    const r = await startFails(dir);
    expect(r.code).toBe(1);
    expect(oneLine(r)).toContain(file);
    expect(fs.readFileSync(file, 'utf8')).toBe('not a directory\n');
  });

  it('an API port already in use', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const dir = await farm.tempDir('api-busy');
      const r = await startFails(dir, '--api', `127.0.0.1:${port}`);
      expect(r.code).not.toBe(0);
      expect(oneLine(r)).toContain(`127.0.0.1:${port}`);
      // the failed start let go of the data directory
      expect(fs.existsSync(path.join(dir, 'node.lock'))).toBe(false);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('a second node on the same data dir names the running pid', async () => {
    const first = await farm.start(local, { ...SAFE, label: 'first' });
    try {
      const keyBefore = fs.readFileSync(path.join(first.dir, 'identity.key'));
      const r = await startFails(first.dir);
      expect(r.code).toBe(1);
      expect(oneLine(r)).toContain(`pid ${first.pid}`);
      // the running node is untouched: same identity, still answering, still owns its api.json
      expect(first.running).toBe(true);
      expect((await first.status()).peerId).toBe(first.peerId);
      expect(fs.readFileSync(path.join(first.dir, 'identity.key'))).toEqual(keyBefore);
      expect(JSON.parse(fs.readFileSync(path.join(first.dir, 'api.json'), 'utf8')).pid).toBe(first.pid);
    } finally {
      await first.stop();
    }
  });

  describe('a corrupt identity key', () => {
    let dir: string;
    let keyPath: string;
    const garbage = Buffer.from('this is not a protobuf private key\n');

    beforeAll(async () => {
      dir = await farm.tempDir('corrupt-key');
      keyPath = path.join(dir, 'identity.key');
      fs.writeFileSync(keyPath, garbage, { mode: 0o600 });
    });

    it('is refused with exit 1 and one line, and never replaced', async () => {
      const r = await startFails(dir);
      expect(r.code).toBe(1);
      expect(oneLine(r)).toMatch(new RegExp(`identity key ${keyPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is corrupt`));
      expect(fs.readFileSync(keyPath)).toEqual(garbage);
      expect(fs.statSync(keyPath).mode & 0o777).toBe(0o600);
      expect(fs.existsSync(path.join(dir, 'api.json'))).toBe(false);
    });

    it('--debug adds the stack trace (and only then)', async () => {
      const r = await startFails(dir, '--debug');
      expect(r.code).toBe(1);
      expect(r.stderr.split('\n')[0]).toMatch(/identity key .* is corrupt/);
      expect(r.stderr).toMatch(STACK);
      expect(fs.readFileSync(keyPath)).toEqual(garbage);
    });
  });
});

describe('identity key', () => {
  it('is mode 0600 and the peer id is the same across two starts', async () => {
    const first = await farm.start(local, { ...SAFE, label: 'identity-1' });
    const keyPath = path.join(first.dir, 'identity.key');
    expect(fs.statSync(keyPath).mode & 0o777).toBe(0o600);
    const key = fs.readFileSync(keyPath);
    const stopped = await first.stop();
    expect(stopped.timedOut).toBe(false);
    expect(stopped.code).toBe(0);

    const second = await first.restart({ label: 'identity-2' });
    expect(second.peerId).toBe(first.peerId);
    expect((await second.status()).peerId).toBe(first.peerId);
    expect(fs.readFileSync(keyPath)).toEqual(key);
    expect(fs.statSync(keyPath).mode & 0o777).toBe(0o600);
    await second.stop();
  });
});
