import { readdir, stat } from 'node:fs/promises'
import { basename, dirname, join, relative, resolve, sep } from 'node:path'
import { JobSpecError } from '../jobs/job-spec.js'
import type { InputFile } from '../jobs/job-model.js'
import type { BlobStore } from '../../storage/blob-store.js'

/**
 * Hash a job's scene and support files into the origin's content store and
 * lay them out as the renderers will see them: files under the scene's
 * folder keep their relative place (so `#include "tex/wood.inc"` still
 * works), others go next to the scene. Each keeps its original absolute path
 * for path mapping.
 */
const MAX_FILES = 100_000

async function walk (dir: string, out: string[]): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name)
    if (entry.isDirectory()) await walk(p, out)
    else if (entry.isFile()) out.push(p)
    if (out.length > MAX_FILES) throw new JobSpecError('files', `more than ${MAX_FILES} files`)
  }
}

function inside (child: string, parent: string): boolean {
  const rel = relative(parent, child)
  return rel !== '' && !rel.startsWith('..') && !rel.startsWith(sep)
}

export async function collectInputs (scene: string, files: string[], blobs: BlobStore): Promise<{ scene: string, inputs: InputFile[] }> {
  const sceneAbs = resolve(scene)
  const st = await stat(sceneAbs).catch(() => undefined)
  if (st == null || !st.isFile()) throw new JobSpecError('scene', `no such file: ${scene}`)
  const base = dirname(sceneAbs)
  const placed = new Map<string, string>() // input path → original
  placed.set(basename(sceneAbs), sceneAbs)
  for (const [i, f] of files.entries()) {
    const abs = resolve(f)
    const fst = await stat(abs).catch(() => undefined)
    if (fst == null) throw new JobSpecError(`files[${i}]`, `no such file or directory: ${f}`)
    const found: string[] = []
    if (fst.isDirectory()) await walk(abs, found)
    else found.push(abs)
    for (const file of found) {
      let rel: string
      if (inside(file, base)) rel = relative(base, file)
      else if (fst.isDirectory()) rel = join(basename(abs), relative(abs, file))
      else rel = basename(file)
      const key = rel.split(sep).join('/')
      const prior = placed.get(key)
      if (prior != null && prior !== file) throw new JobSpecError(`files[${i}]`, `${file} and ${prior} would both become ${key}`)
      placed.set(key, file)
    }
  }
  const inputs: InputFile[] = []
  for (const [path, original] of placed) {
    const { hash, size } = await blobs.putFile(original)
    inputs.push({ path, hash, size, original })
  }
  return { scene: basename(sceneAbs), inputs }
}
