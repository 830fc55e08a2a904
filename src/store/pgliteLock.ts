/**
 * The embedded store's lock file, `<dataDir>/durable-emitter.lock`: one process at a time may open
 * a data directory (PGlite is one backend; two processes on one pgdata would corrupt it). The file
 * holds the holder's pid and, on Linux, its boot and start time, so a lock left behind by a
 * crashed process is recognised as stale even when its pid has been reused.
 */
import { Effect, type Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { StoreError, StoreLocked } from "../Errors.ts"

export const lockFileName = "durable-emitter.lock"

type LockAttempt =
  | { readonly _tag: "Acquired" }
  | { readonly _tag: "Held"; readonly pid: number }

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

const errnoOf = (error: unknown) => (error as NodeJS.ErrnoException | undefined)?.code

const readIfExists = (file: string): string | undefined => {
  try {
    return fs.readFileSync(file, "utf8")
  } catch (error) {
    if (errnoOf(error) === "ENOENT") return undefined
    throw error
  }
}

const unlinkIfExists = (file: string) => {
  try {
    fs.unlinkSync(file)
  } catch (error) {
    if (errnoOf(error) !== "ENOENT") throw error
  }
}

let bootId: string | undefined

/**
 * What tells a process apart from a later one that got the same pid: the boot it runs in and its
 * start time (Linux: /proc). Undefined where that cannot be read (other systems, a pid that is
 * gone): then the pid alone decides.
 */
export const processIdentity = (pid: number): string | undefined => {
  try {
    bootId ??= fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()
    // Field 22 of /proc/<pid>/stat, counted after the command name (which may hold spaces).
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const startTime = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]
    return startTime === undefined || startTime === "" ? undefined : `${bootId}/${startTime}`
  } catch {
    return undefined
  }
}

interface LockContent {
  readonly pid: number
  readonly identity: string | undefined
}

const lockContent = (): string => `${process.pid}\n${processIdentity(process.pid) ?? ""}\n`

const parseLock = (content: string): LockContent | undefined => {
  const [first, second] = content.split("\n")
  const pid = Number(first?.trim())
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined
  const identity = second?.trim()
  return { pid, identity: identity === undefined || identity === "" ? undefined : identity }
}

/** Whether the process that wrote the lock still runs: its pid is alive and, where known, is still it. */
const holderRuns = (lock: LockContent): boolean => {
  if (!isAlive(lock.pid)) return false
  if (lock.identity === undefined) return true
  const now = processIdentity(lock.pid)
  return now === undefined || now === lock.identity
}

/**
 * Takes `lockFile` for this process, or names the live process that holds it.
 *
 * The file appears with its content in one step (written under a private name, then hard-linked
 * into place; the link fails if the lock exists), so a reader never sees it half-written. A lock
 * whose process no longer runs (its pid is dead, or now belongs to a process started later, after
 * a crash and a reboot for instance), or that holds no pid, is stale: it is renamed away, which
 * only one contender can do, then checked; if it turns out to be a fresh lock that replaced the
 * stale one in the meantime, it is put back.
 */
const tryLock = (lockFile: string): LockAttempt => {
  const mine = lockContent()
  const scratch = `${lockFile}.${process.pid}.${Math.random().toString(36).slice(2)}`
  fs.writeFileSync(scratch, mine, { flag: "wx" })
  try {
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        fs.linkSync(scratch, lockFile)
        return { _tag: "Acquired" }
      } catch (error) {
        if (errnoOf(error) !== "EEXIST") throw error
      }
      const content = readIfExists(lockFile)
      if (content === undefined) continue
      const holder = parseLock(content)
      if (holder !== undefined && holderRuns(holder)) return { _tag: "Held", pid: holder.pid }
      const moved = `${scratch}.stale`
      try {
        fs.renameSync(lockFile, moved)
      } catch (error) {
        if (errnoOf(error) === "ENOENT") continue
        throw error
      }
      if (readIfExists(moved) !== content) {
        try {
          fs.linkSync(moved, lockFile)
        } catch (error) {
          if (errnoOf(error) !== "EEXIST") throw error
        }
      }
      unlinkIfExists(moved)
    }
    throw new Error(`could not take ${lockFile}: it kept changing under us`)
  } finally {
    unlinkIfExists(scratch)
  }
}

/** Removes the lock if it is still ours (nobody took it over while we held it). */
const unlock = (lockFile: string) => {
  const content = readIfExists(lockFile)
  if (content !== undefined && parseLock(content)?.pid === process.pid) unlinkIfExists(lockFile)
}

/**
 * Holds `<dataDir>/durable-emitter.lock` for the scope: fails with `StoreLocked` naming the holder
 * when a running process (this one included) has it; takes over a lock left by one that is gone.
 */
export const acquireLock = (dataDir: string): Effect.Effect<void, StoreLocked | StoreError, Scope.Scope> => {
  const lockFile = path.join(dataDir, lockFileName)
  return Effect.acquireRelease(
    Effect.try({
      try: () => {
        fs.mkdirSync(dataDir, { recursive: true })
        return tryLock(lockFile)
      },
      catch: (error) =>
        new StoreError({ operation: "open", reason: `cannot lock ${lockFile}: ${String(error)}`, retryable: false, committed: "no" })
    }).pipe(
      Effect.flatMap((attempt) =>
        attempt._tag === "Acquired"
          ? Effect.void
          : Effect.fail(new StoreLocked({ dataDir, lockFile, holderPid: attempt.pid }))
      )
    ),
    () =>
      Effect.try(() => unlock(lockFile)).pipe(
        Effect.catch((error) => Effect.logWarning(`could not remove the lock file ${lockFile}`, error))
      )
  )
}
