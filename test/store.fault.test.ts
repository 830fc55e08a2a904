/**
 * How a driver error becomes a StoreError (src/store/driverFault.ts): the classification as a
 * table, and what is read off sql-pg's errors (the server's SQLSTATE, the socket's code).
 */
import { assert, describe, it } from "@effect/vitest"
import { ConnectionError, SqlError, StatementTimeoutError, UnknownError } from "effect/sql/SqlError"
import type { DriverFault } from "../src/Errors.ts"
import { classifyFault, readDriverFault, toStoreError } from "../src/store/driverFault.ts"

const server = (sqlState: string, phase: "connect" | "query" = "query"): DriverFault => ({
  kind: "UnknownError",
  sqlState,
  phase,
  detail: "x"
})

describe("driver fault classification", () => {
  it("the table: SQLSTATE and whether anything was sent decide retryable and committed", () => {
    const table: ReadonlyArray<[string, DriverFault, boolean, "no" | "unknown"]> = [
      // the server refused the statement: nothing of it committed
      ["serialization failure", server("40001"), true, "no"],
      ["deadlock", server("40P01"), true, "no"],
      ["lock not available", server("55P03"), true, "no"],
      ["statement timeout", { ...server("57014"), kind: "StatementTimeoutError" }, true, "no"],
      ["admin shutdown", server("57P01"), true, "no"],
      ["crash shutdown", server("57P02"), true, "no"],
      ["cannot connect now", server("57P03"), true, "no"],
      ["idle session timeout", server("57P05"), true, "no"],
      ["connection exception class", server("08006"), true, "no"],
      ["protocol violation", server("08P01"), true, "no"],
      ["too many connections", server("53300"), true, "no"],
      ["disk full", server("53100"), true, "no"],
      ["out of memory", server("53200"), true, "no"],
      ["starting up, while connecting", server("57P03", "connect"), true, "no"],
      ["statement completion unknown", server("40003"), true, "unknown"],
      // refusals a retry cannot change
      ["invalid byte sequence", server("22021"), false, "no"],
      ["unique violation", { ...server("23505"), kind: "UniqueViolation" }, false, "no"],
      ["undefined table", { ...server("42P01"), kind: "SqlSyntaxError" }, false, "no"],
      ["database dropped", server("57P04"), false, "no"],
      ["internal error", server("XX000"), false, "no"],
      ["authentication failed", { ...server("28P01", "connect"), kind: "AuthenticationError" }, false, "no"],
      // no answer while connecting: nothing was sent
      ["refused", { kind: "ConnectionError", errno: "ECONNREFUSED", phase: "connect", detail: "x" }, true, "no"],
      ["reset while connecting", { kind: "ConnectionError", errno: "ECONNRESET", phase: "connect", detail: "x" }, true, "no"],
      ["connect timeout", { kind: "ConnectionError", phase: "connect", detail: "x" }, true, "no"],
      ["no password", { kind: "AuthenticationError", phase: "connect", detail: "x" }, false, "no"],
      // no answer after the statement was sent: its outcome is unknown
      ["reset mid-statement", { kind: "ConnectionError", errno: "ECONNRESET", phase: "query", detail: "x" }, true, "unknown"],
      ["broken pipe", { kind: "ConnectionError", errno: "EPIPE", phase: "query", detail: "x" }, true, "unknown"],
      ["closed mid-statement", { kind: "ConnectionError", phase: "query", detail: "x" }, true, "unknown"],
      ["protocol desync", { kind: "UnknownError", phase: "query", detail: "x" }, false, "unknown"]
    ]
    for (const [name, fault, retryable, committed] of table) {
      assert.deepStrictEqual(classifyFault(fault), { retryable, committed }, name)
    }
  })

  it("reads the SQLSTATE of a server's error response and the code of a socket error", () => {
    const fromServer = new SqlError({
      reason: new UnknownError({
        cause: Object.assign(new Error("terminating connection due to administrator command"), {
          severity: "FATAL",
          code: "57P01"
        }),
        message: "PgConnection: Query failed",
        operation: "query"
      })
    })
    assert.deepStrictEqual(readDriverFault(fromServer), {
      kind: "UnknownError",
      sqlState: "57P01",
      phase: "query",
      detail: "PgConnection: Query failed: terminating connection due to administrator command"
    })
    const refused = new SqlError({
      reason: new ConnectionError({
        cause: Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED", syscall: "connect" }),
        message: "PgConnection: Failed to connect",
        operation: "connect"
      })
    })
    const error = toStoreError("append")(refused)
    assert.deepStrictEqual([error.retryable, error.committed, error.driver?.errno, error.driver?.sqlState], [
      true,
      "no",
      "ECONNREFUSED",
      undefined
    ])
    assert.include(error.message, "ECONNREFUSED 127.0.0.1:1")
  })

  it("a statement timeout keeps the driver's reason in the StoreError", () => {
    const error = toStoreError("append")(
      new SqlError({
        reason: new StatementTimeoutError({
          cause: Object.assign(new Error("canceling statement due to statement timeout"), { severity: "ERROR", code: "57014" }),
          message: "PgConnection: Query failed",
          operation: "query"
        })
      })
    )
    assert.deepStrictEqual([error.driver?.kind, error.driver?.sqlState, error.retryable, error.committed], [
      "StatementTimeoutError",
      "57014",
      true,
      "no"
    ])
    assert.include(error.reason, "canceling statement due to statement timeout")
  })
})
