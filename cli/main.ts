#!/usr/bin/env node
import '../node/polyfill.js'
import { parse, type Command, type Output } from './command.js'
import { start } from './commands/start.js'
import { init } from './commands/init.js'
import { status } from './commands/status.js'
import { hosts, host } from './commands/hosts.js'
import { extraCommands } from './commands/index.js'

/**
 * `farmesh`: parse, call the local node, print. Exit codes: 0 done, 1 a
 * runtime failure, 2 a usage error. One line per error; stack only with --debug.
 */
const COMMANDS: Command[] = [start, init, status, hosts, host, ...extraCommands]

const out: Output = {
  print: (t) => { process.stdout.write(t + '\n') },
  json: (v) => { process.stdout.write(JSON.stringify(v, null, 2) + '\n') },
  error: (t) => { process.stderr.write(t + '\n') }
}

function help (): string {
  const w = Math.max(...COMMANDS.map(c => c.name.length))
  return [
    'farmesh — a render farm with no central server',
    '',
    'usage: farmesh COMMAND [options]     (farmesh COMMAND --help for its options)',
    '',
    ...COMMANDS.map(c => `  ${c.name.padEnd(w)}  ${c.summary}`),
    '',
    'common options: --data DIR (or FARMESH_DATA; default ~/.farmesh)  --json  --debug'
  ].join('\n')
}

async function main (argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name == null || name === '--help' || name === '-h' || name === 'help') { out.print(help()); return name == null ? 2 : 0 }
  if (name === '--version') { out.print('farmesh 0.1.0'); return 0 }
  const cmd = COMMANDS.find(c => c.name === name)
  if (cmd == null) { out.error(`farmesh: unknown command ${JSON.stringify(name)} (see farmesh --help)`); return 2 }
  const debug = rest.includes('--debug')
  try {
    const parsed = parse(cmd, rest, process.env)
    if (parsed.values.help === true) { out.print(`usage: farmesh ${cmd.usage}\n\n${cmd.summary}`); return 0 }
    return (await cmd.run(parsed, out)) ?? 0
  } catch (err: any) {
    out.error(`farmesh ${cmd.name}: ${err.message}`)
    if (debug && err.stack != null) out.error(err.stack)
    return err.name === 'UsageError' ? 2 : 1
  }
}

main(process.argv.slice(2)).then(code => { process.exitCode = code; if (code !== 0 || process.argv[2] !== 'start') setTimeout(() => process.exit(code), 50).unref() }, (err) => {
  process.stderr.write(`farmesh: ${err.message}\n`)
  process.exit(1)
})
