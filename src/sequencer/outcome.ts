/**
 * Decisions of the write path over data: what a failed commit tells its callers, whether the
 * database refused the batch because of one of its events (then the batch is split to find it),
 * how the time of an emit is shared between the queue and the commit, and when a run of failed
 * commits starts and ends (one warning per episode, not one per commit).
 */
import { Cause } from "effect"
import { CommitFailed, StoreError } from "../Errors.ts"

/**
 * The commit's share of `commitTimeout`: an emit waits in the queue for at most the other half,
 * so that queue and commit together never exceed `commitTimeout`.
 */
export const commitBudgetMs = (commitTimeoutMs: number): number => Math.max(1, Math.floor(commitTimeoutMs / 2))

/**
 * The bound the database itself should set on an append (e.g. `statement_timeout`): shorter than
 * the commit budget, so the server gives up and says so before the client stops waiting, and the
 * outcome of a slow commit is known ("no") rather than unknown.
 */
export const serverCommitBoundMs = (commitTimeoutMs: number): number => Math.max(1, Math.floor(commitBudgetMs(commitTimeoutMs) * 0.8))

/**
 * SQLSTATE classes that belong to the rows rather than to the database: 22 (data exception: an
 * invalid byte sequence, a value out of range), 23 (integrity constraint violation: a CHECK, NOT
 * NULL or unique constraint) and 54 (program limit exceeded: a value too large).
 */
const dataClasses = new Set(["22", "23", "54"])

/** Whether the database refused the batch for something one of its events holds. */
export const refusedForItsData = (error: StoreError): boolean => {
  const state = error.driver?.sqlState
  return !error.retryable && state !== undefined && dataClasses.has(state.slice(0, 2))
}

/** What a commit's callers are told when it fails or times out. */
export const toCommitFailed = (cause: Cause.Cause<StoreError | Cause.TimeoutError>): CommitFailed => {
  const error = Cause.findErrorOption(cause)
  if (error._tag === "Some" && error.value instanceof StoreError) {
    // The store says whether the append may have taken effect (a connection lost while it ran).
    return new CommitFailed({ reason: error.value.message, retryable: error.value.retryable, committed: error.value.committed })
  }
  if (error._tag === "Some") return new CommitFailed({ reason: "the commit timed out", retryable: true, committed: "unknown" })
  if (Cause.hasInterruptsOnly(cause)) return new CommitFailed({ reason: "the emitter stopped during the commit", retryable: true, committed: "unknown" })
  return new CommitFailed({ reason: `unexpected failure: ${Cause.pretty(cause)}`, retryable: false, committed: "unknown" })
}

/** The emit the database refused on its own, after the batch was split to find it. */
export const refusedAlone = (error: CommitFailed): CommitFailed =>
  new CommitFailed({ reason: `the database refused this event: ${error.reason}`, retryable: false, committed: "no" })

export const backedUp = new CommitFailed({
  reason: "no commit within commitTimeout: the write queue is backed up",
  retryable: true,
  committed: "no"
})

/** A run of failed commits, from the first failure to the next commit that succeeds. */
export interface Episode {
  readonly startedAt: number
  readonly reason: string
  failedCommits: number
  failedEmits: number
}

/** Counts a failed commit; answers the new episode when this failure starts one (then: warn). */
export const failureIn = (episode: Episode | undefined, now: number, error: CommitFailed, emits: number): Episode => {
  const current = episode ?? { startedAt: now, reason: error.reason, failedCommits: 0, failedEmits: 0 }
  current.failedCommits++
  current.failedEmits += emits
  return current
}

/** What the end of an episode logs. */
export const episodeSummary = (episode: Episode, now: number) => ({
  failedCommits: episode.failedCommits,
  failedEmits: episode.failedEmits,
  durationMs: now - episode.startedAt,
  firstReason: episode.reason
})
