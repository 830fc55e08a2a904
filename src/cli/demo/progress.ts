/**
 * The demo's live display on stderr: one line rewritten in place on a terminal; elsewhere (CI, a
 * pipe) a plain line every few seconds, so logs stay short. Notes (outage started, …) always get
 * their own line.
 */

export interface Progress {
  /** The current status line; shown now on a terminal, at most every `plainIntervalMs` otherwise. */
  readonly update: (line: string) => void
  /** A line of its own, shown at once. */
  readonly note: (line: string) => void
  /** Leaves the last status on screen and stops updating. */
  readonly done: () => void
}

export const makeProgress = (options: {
  readonly stream?: NodeJS.WriteStream
  readonly tty?: boolean
  readonly plainIntervalMs?: number
  readonly now?: () => number
} = {}): Progress => {
  const stream = options.stream ?? process.stderr
  const tty = options.tty ?? (stream.isTTY === true && process.env.TERM !== "dumb")
  const plainIntervalMs = options.plainIntervalMs ?? 2_000
  const now = options.now ?? Date.now
  let current = ""
  let lastPlainAt = -Infinity
  let lastPrinted = ""
  let finished = false

  const fit = (line: string) => {
    const width = stream.columns > 0 ? stream.columns : 120 // 0 on a pseudo-terminal without a size
    return line.length >= width ? line.slice(0, Math.max(0, width - 2)) + "…" : line
  }

  return {
    update: (line) => {
      if (finished) return
      current = line
      if (tty) {
        stream.write(`\r\x1b[2K${fit(line)}`)
      } else if (now() - lastPlainAt >= plainIntervalMs) {
        lastPlainAt = now()
        lastPrinted = line
        stream.write(`${line}\n`)
      }
    },
    note: (line) => {
      if (tty) stream.write(`\r\x1b[2K${line}\n${current === "" || finished ? "" : fit(current)}`)
      else stream.write(`${line}\n`)
    },
    done: () => {
      if (finished) return
      finished = true
      if (tty && current !== "") stream.write("\n")
      if (!tty && current !== lastPrinted) stream.write(`${current}\n`)
    }
  }
}
