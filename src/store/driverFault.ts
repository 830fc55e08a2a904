/**
 * How a failure the database driver reports becomes a StoreError: what the driver said, read off
 * its error as data (`readDriverFault`), and the decision over that data (`classifyFault`), pure
 * and tested as a table (test/store.fault.test.ts).
 *
 * Two questions decide a fault:
 * - Was anything sent? A failure while connecting (refused, reset, timed out, the server
 *   starting up) sent nothing: the call did not happen (`committed: "no"`).
 * - Did the server answer? An error response with a SQLSTATE means the server refused the
 *   statement, and since every Store call is one statement in its own transaction, nothing of it
 *   was committed (`"no"`). Only a connection lost while the statement ran (no answer) leaves the
 *   outcome unknown (`"unknown"`).
 * Retryable: connection failures, SQLSTATE classes 08 (connection), 53 (insufficient resources),
 * 40001 / 40P01 (serialization failure, deadlock), 55P03 (lock not available), 57014 (statement
 * timeout or cancel) and 57P01 / 57P02 / 57P03 / 57P05 (the server shutting down, crashed,
 * starting up, or closing an idle session). Everything else the server refuses is not: a retry
 * sends the same statement and gets the same answer.
 */
import type { SqlError } from "effect/sql/SqlError"
import { type DriverFault, StoreError } from "../Errors.ts"

export interface FaultClass {
  readonly retryable: boolean
  readonly committed: "no" | "unknown"
}

const retryableStates = new Set(["40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "57P05"])
const retryableClasses = new Set(["08", "53"])

/** Whether the server's refusal may clear by itself. */
export const isRetryableSqlState = (sqlState: string): boolean =>
  retryableStates.has(sqlState) || retryableClasses.has(sqlState.slice(0, 2))

/** The decision, over what the driver reported. */
export const classifyFault = (fault: DriverFault): FaultClass => {
  // statement_completion_unknown: the server itself cannot tell.
  if (fault.sqlState === "40003") return { retryable: true, committed: "unknown" }
  if (fault.sqlState !== undefined) {
    // The server answered: the statement (or the connection attempt) was refused whole.
    return { retryable: isRetryableSqlState(fault.sqlState), committed: "no" }
  }
  // No answer. While connecting nothing was sent; a connection that is refused, reset or timed
  // out (ECONNREFUSED, ECONNRESET, EPIPE, ...) may work later. Once the statement was sent, its
  // outcome is unknown.
  return { retryable: fault.kind === "ConnectionError", committed: fault.phase === "connect" ? "no" : "unknown" }
}

const stringProperty = (value: unknown, name: string): string | undefined => {
  if (typeof value !== "object" || value === null) return undefined
  const property: unknown = (value as Record<string, unknown>)[name]
  return typeof property === "string" ? property : undefined
}

/** What the driver reported: its reason, and the server's SQLSTATE or the socket's error code. */
export const readDriverFault = (error: SqlError): DriverFault => {
  const cause: unknown = error.reason.cause
  const code = stringProperty(cause, "code")
  // A server's error response carries a severity; a Node.js socket error a syscall or an errno.
  const fromServer = stringProperty(cause, "severity") !== undefined
  const causeMessage = cause instanceof Error ? cause.message : ""
  const driverMessage = error.message
  const detail = causeMessage !== "" && !driverMessage.includes(causeMessage)
    ? `${driverMessage}: ${causeMessage}`
    : driverMessage
  return {
    kind: error.reason._tag,
    ...(code !== undefined && (fromServer ? { sqlState: code } : { errno: code })),
    phase: error.reason.operation === "connect" ? "connect" : "query",
    detail
  }
}

/** The fault in words: "StatementTimeoutError 57014: PgConnection: Query failed: canceling …". */
export const describeFault = (fault: DriverFault): string =>
  `${fault.kind}${fault.sqlState === undefined ? "" : ` ${fault.sqlState}`}${
    fault.errno === undefined ? "" : ` ${fault.errno}`
  }: ${fault.detail}`

/** A driver error as the StoreError of `operation`, classified. */
export const toStoreError = (operation: string) => (error: SqlError): StoreError => {
  const driver = readDriverFault(error)
  return new StoreError({ operation, reason: describeFault(driver), ...classifyFault(driver), driver })
}
