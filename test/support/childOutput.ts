/**
 * A child process's output as the tests read it: stdout split into lines, stderr kept.
 */
import type { ChildProcessWithoutNullStreams } from "node:child_process"

export interface OutputOptions {
  /** Called with every complete stdout line, in order. */
  readonly onLine: (line: string) => void
  /** Called once per stdout chunk, after its lines. */
  readonly afterChunk?: () => void
  /** Keep only the last this many characters of stderr (a chatty child). Default: all of it. */
  readonly stderrTail?: number
}

/** Starts reading the child's output; answers what it wrote to stderr so far. */
export const watchOutput = (child: ChildProcessWithoutNullStreams, options: OutputOptions) => {
  let pending = ""
  let stderr = ""
  child.stdout.setEncoding("utf8")
  child.stdout.on("data", (chunk: string) => {
    pending += chunk
    for (let i = pending.indexOf("\n"); i >= 0; i = pending.indexOf("\n")) {
      options.onLine(pending.slice(0, i))
      pending = pending.slice(i + 1)
    }
    options.afterChunk?.()
  })
  child.stderr.setEncoding("utf8")
  child.stderr.on("data", (chunk: string) => {
    stderr += chunk
    if (options.stderrTail !== undefined) stderr = stderr.slice(-options.stderrTail)
  })
  return { stderr: () => stderr }
}
