/**
 * How the PostgreSQL Store declares a statement: its text, its parameters and its result columns
 * in ONE place. The parameters are named; their `$1..$n` numbers come from the order of `params`,
 * and `bind` fills them by name. The result columns are named with their SQL expressions;
 * `decode` reads a row by those names, and their positions come from the order of `columns`.
 *
 * The text is built once per set of tables and never changes with the input (arrays travel as
 * one parameter per column), so each statement is prepared once per connection; rows are read as
 * arrays (`.values`), not objects. That is the speed, and this keeps it.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql/SqlError"
import type { StoreError } from "../Errors.ts"
import type { EventRecord } from "../Store.ts"

/** One row as the driver returns it with `.values`. */
export type Row = ReadonlyArray<unknown>

export interface Statement<In, Out> {
  /** The Store operation it serves, for errors and spans. */
  readonly operation: string
  readonly text: string
  /** The parameter array, in `$1..$n` order. */
  readonly bind: (input: In) => ReadonlyArray<unknown>
  readonly decode: (row: Row) => Out
}

/** Placeholders by name: `{ now: "$1", limit: "$2" }` for `["now", "limit"]`. */
const placeholders = <P extends string>(params: ReadonlyArray<P>) =>
  Object.fromEntries(params.map((name, i) => [name, `$${i + 1}`])) as { readonly [K in P]: string }

/** A SELECT / RETURNING list from named expressions: `id, (…)::int8 AS created_at`. */
const selectList = (columns: Readonly<Record<string, string>>) =>
  Object.entries(columns).map(([name, expression]) => expression === name ? name : `${expression} AS ${name}`).join(", ")

const positions = <C extends string>(columns: Readonly<Record<C, string>>) =>
  Object.fromEntries(Object.keys(columns).map((name, i) => [name, i])) as { readonly [K in C]: number }

/**
 * Named result columns for a text built per call: `list` to SELECT, `at` each column's position.
 * `statement` does the same for fixed texts.
 */
export const resultColumns = <const C extends string>(columns: { readonly [K in C]: string }) => ({
  list: selectList(columns),
  at: positions(columns)
})

export const statement = <const P extends string, const C extends string, In, Out>(spec: {
  readonly operation: string
  /** The parameters, in `$1..$n` order. */
  readonly params: ReadonlyArray<P>
  /** The result columns in order: name → SQL expression (the name itself for a plain column). */
  readonly columns: { readonly [K in C]: string }
  /** The text; `param.now` is now's placeholder, `columns` the result list to SELECT or RETURN. */
  readonly text: (param: { readonly [K in P]: string }, columns: string) => string
  readonly bind: (input: In) => { readonly [K in P]: unknown }
  readonly decode: (row: Row, column: { readonly [K in C]: number }) => Out
}): Statement<In, Out> => {
  const column = positions(spec.columns)
  const { params } = spec
  return {
    operation: spec.operation,
    text: spec.text(placeholders(params), selectList(spec.columns)),
    bind: (input) => {
      const named = spec.bind(input)
      return params.map((name) => named[name])
    },
    decode: (row) => spec.decode(row, column)
  }
}

/** A statement's runner: the driver call, its bound and its error mapping (see PgStore.make). */
export interface Runner {
  readonly run: <In, Out>(statement: Statement<In, Out>, input: In) => Effect.Effect<Array<Out>, StoreError>
  /** For statements whose text depends on the input (dead-letter filters): no fixed text to prepare. */
  readonly runText: (operation: string, text: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>, StoreError>
}

/**
 * The driver makes a span per statement carrying its whole text (`db.query.text`), and no option
 * of effect/sql or sql-pg leaves the text out (it is written after the client's `spanAttributes`).
 * So unless `statementSpans` is set the driver runs with the tracer off: the Store's own spans
 * (`PgStore.append`, …) remain, without children holding SQL text.
 */
export const makeRunner = (
  sql: SqlClient.SqlClient,
  guard: (operation: string) => <A>(effect: Effect.Effect<A, SqlError>) => Effect.Effect<A, StoreError>,
  statementSpans = false
): Runner => {
  const traced = <A>(effect: Effect.Effect<A, SqlError>) => statementSpans ? effect : Effect.withTracerEnabled(effect, false)
  return {
    run: (statement, input) =>
      traced(sql.unsafe(statement.text, statement.bind(input)).values).pipe(
        guard(statement.operation),
        Effect.map((rows) => rows.map(statement.decode))
      ),
    runText: (operation, text, params) => traced(sql.unsafe(text, params).values).pipe(guard(operation))
  }
}

/** Epoch milliseconds (a parameter) as a timestamptz, exact to the microsecond. */
export const ts = (param: string) => `to_timestamp(${param}::float8 / 1000)`
/** A timestamptz column as epoch milliseconds, so times round-trip exactly. */
export const ms = (column: string) => `(extract(epoch FROM ${column}) * 1000)::int8`

export const toNumber = (value: unknown): number => typeof value === "number" ? value : Number(value)

/**
 * An int8 column (ids, seqs) as a bigint, whatever the client decodes int8 as: the application's
 * own PgClient (`layerFromClient`) may register a codec that reads int8 as a string or a number,
 * and a receipt's `seq` must still be the bigint its type says.
 */
export const toBigInt = (value: unknown): bigint => typeof value === "bigint" ? value : BigInt(value as string | number)

/**
 * The driver decodes bytea as a view into the message it received. Rows outlive the query (they
 * wait in the publish queue), so each payload gets its own copy: a view would pin the whole
 * message buffer in memory.
 */
export const ownBytes = (value: unknown): Uint8Array => (value as Uint8Array).slice()

/** The columns of an `EventRecord`, in both tables; statements spread them into their own. */
export const eventColumns = {
  id: "id",
  event_id: "event_id",
  source: "source",
  type: "type",
  seq: "seq",
  payload: "payload",
  created_at: ms("created_at")
} as const

export const decodeEvent = (row: Row, c: { readonly [K in keyof typeof eventColumns]: number }): EventRecord => ({
  rowId: toBigInt(row[c.id]),
  eventId: row[c.event_id] as string,
  source: row[c.source] as string,
  type: row[c.type] as string,
  seq: toBigInt(row[c.seq]),
  payload: ownBytes(row[c.payload]),
  createdAt: toNumber(row[c.created_at])
})
