/**
 * What every renderer adapter turns a task into: one child process, run
 * without a shell, whose output file(s) land in `outputDir`.
 */
export interface RenderTask {
  /** absolute path of the scene file, already in the host's job directory */
  scene: string
  /** directory holding the job's inputs (the scene and its support files) */
  inputDir: string
  /** directory the renderer must write its outputs into (created beforehand) */
  outputDir: string
  /** first and last frame of this task (a chunk; equal for a single frame) */
  start: number
  end: number
  /**
   * First and last frame of the whole job, when known. POV-Ray derives `clock`
   * from them, so a chunk of a longer animation gets each frame's own clock
   * value; without them the task's own range is used.
   */
  clockStart?: number
  clockEnd?: number
  width?: number
  height?: number
  /**
   * output file name pattern; `#` runs are replaced by the zero-padded frame
   * number (see output-names.ts). Default `frame_####.png`
   */
  outputPattern?: string
  /** `command` renderer only: argv template with placeholders, see command.ts */
  command?: string[]
  /** blender only: allow the scene's Python scripts (local trusted jobs only) */
  allowScripts?: boolean
}

export interface CommandLine {
  file: string
  args: string[]
  cwd: string
  env?: Record<string, string>
}

export interface RendererAdapter {
  name: string
  /** the argv for this task */
  commandLine (task: RenderTask): CommandLine
  /**
   * Progress of the task in [0, 1] parsed from one line of the renderer's
   * stdout/stderr, or undefined when the line says nothing about progress.
   */
  parseProgress (line: string, task: RenderTask): number | undefined
  /** the output files the task must have produced, one per frame, absolute */
  expectedOutputs (task: RenderTask): string[]
  /**
   * Per-task progress parser, for renderers whose progress lines only make
   * sense with earlier ones (POV-Ray's pixel counts follow a frame header).
   * runTask prefers it over `parseProgress`.
   */
  createProgressParser? (task: RenderTask): (line: string) => number | undefined
  /** runs before the process starts (e.g. create a scratch directory) */
  prepare? (task: RenderTask): Promise<void>
  /**
   * runs after the process ended, whatever its exit status (so frames a
   * failed chunk did finish are still kept), e.g. to rename outputs
   */
  finalize? (task: RenderTask): Promise<void>
  /** the renderer's own error message among the last log lines, if it can tell */
  errorLine? (lines: string[]): string | undefined
}
