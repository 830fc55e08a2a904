/**
 * Where the store commands (migrate, inspect, dead-letters) and the demo keep their tables: the
 * library's own configuration (DATABASE_URL, DURABLE_EMITTER_*), with --database-url, --data-dir
 * and --table-prefix on top. Only the Store is built: no publisher, no retransmitter, nothing sent.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Layer, Option, Redacted } from "effect"
import { Flag } from "effect/cli"
import { SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql/SqlError"
import * as Config from "../Config.ts"
import { storeLayer as optionsStoreLayer } from "../config/layers.ts"
import { InvalidConfig, type PackageMissing, type StoreError, type StoreLocked } from "../Errors.ts"
import type { Store } from "../Store.ts"
import { CommandFailed } from "./errors.ts"

export const storeFlags = {
  databaseUrl: Flag.String("database-url").pipe(
    Flag.withDescription("PostgreSQL URL (default: DATABASE_URL; without either, the embedded store in --data-dir)"),
    Flag.optional
  ),
  dataDir: Flag.String("data-dir").pipe(
    Flag.withDescription("data directory of the embedded store (default: DURABLE_EMITTER_DATA_DIR or .data/durable-emitter)"),
    Flag.optional
  ),
  tablePrefix: Flag.String("table-prefix").pipe(
    Flag.withDescription("prefix of the tables (default: DURABLE_EMITTER_TABLE_PREFIX or durable_emitter)"),
    Flag.optional
  )
} as const

export interface StoreFlags {
  readonly databaseUrl: Option.Option<string>
  readonly dataDir: Option.Option<string>
  readonly tablePrefix: Option.Option<string>
}

/** The flag that sets each store option: an error in a flag's value names the flag, not the option. */
const flagOf = { databaseUrl: "--database-url", dataDir: "--data-dir", tablePrefix: "--table-prefix" } as const

/** The store options the flags set. */
const fromFlags = (flags: StoreFlags): Config.EmitterOptionsInput => ({
  ...Option.match(flags.databaseUrl, { onNone: () => ({}), onSome: (databaseUrl) => ({ databaseUrl }) }),
  ...Option.match(flags.dataDir, { onNone: () => ({}), onSome: (dataDir) => ({ dataDir }) }),
  ...Option.match(flags.tablePrefix, { onNone: () => ({}), onSome: (tablePrefix) => ({ tablePrefix }) })
})

/**
 * The options of a command: `base` (a command's own tuning), the environment over it, the flags
 * over that, `overrides` last. Answers the input (to build an emitter with) and its resolution.
 */
export const resolveInput = (
  flags: StoreFlags,
  overrides: Config.EmitterOptionsInput = {},
  base: Config.EmitterOptionsInput = {}
) =>
  Effect.gen(function*() {
    const set = fromFlags(flags)
    const input: Config.EmitterOptionsInput = { ...base, ...(yield* Config.fromEnv), ...set, ...overrides }
    const options = yield* Config.resolve(input).pipe(
      Effect.mapError((error) => {
        const flag = flagOf[error.option as keyof typeof flagOf]
        return flag !== undefined && error.option in set && !(error.option in overrides)
          ? new InvalidConfig({ option: flag, rule: error.rule })
          : error
      })
    )
    return { input, options }
  })

/** The environment's options with the flags on top, resolved and validated. */
export const resolveOptions = (flags: StoreFlags, overrides: Config.EmitterOptionsInput = {}) =>
  Effect.map(resolveInput(flags, overrides), ({ options }) => options)

/** A PostgreSQL URL with its password hidden. */
export const redactUrl = (url: string): string => {
  try {
    const parsed = new URL(url)
    if (parsed.password !== "") parsed.password = "***"
    return parsed.toString()
  } catch {
    return "(unparsable URL)"
  }
}

/** One line naming the store and its tables, e.g. for the first line of `inspect`. */
export const describeTarget = (options: Config.EmitterOptions): string =>
  Option.match(options.databaseUrl, {
    onSome: (url) => `PostgreSQL ${redactUrl(Redacted.value(url))}, tables ${options.tablePrefix}_*`,
    onNone: () => `embedded store in ${options.dataDir}, tables ${options.tablePrefix}_*`
  })

/** The Store alone (building it runs the migrations), on a small pool of its own. */
export const storeLayer = (options: Config.EmitterOptions): Layer.Layer<Store, StoreError | StoreLocked | InvalidConfig | PackageMissing> =>
  optionsStoreLayer(options, { maxConnections: 2, applicationName: `${options.name}-cli` })

/** A plain SQL client on the same database, for what the Store does not offer (migration report). */
export const sqlClientLayer = (
  options: Config.EmitterOptions
): Layer.Layer<SqlClient.SqlClient, SqlError | StoreError | StoreLocked | InvalidConfig | PackageMissing> =>
  Option.match(options.databaseUrl, {
    onSome: (url) =>
      Layer.unwrap(Effect.map(
        Effect.promise(() => import("@effect/sql-pg")),
        ({ PgClient }) =>
          PgClient.layer({ url, maxConnections: 1, connectTimeout: options.connectTimeoutMs, applicationName: `${options.name}-cli` })
      )),
    onNone: () =>
      Layer.unwrap(Effect.map(
        Effect.promise(() => import("../store/PgliteStore.ts")),
        (PgliteStore) => PgliteStore.layerClient({ dataDir: options.dataDir })
      ))
  })

/**
 * Fails unless the tables exist: reading commands must not create tables under a mistyped prefix
 * (building the Store would migrate them into existence).
 */
export const requireTables = (options: Config.EmitterOptions) =>
  Option.match(options.databaseUrl, {
    onSome: () =>
      SqlClient.SqlClient.use((sql) =>
        sql.unsafe<{ found: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS found`, [`${options.tablePrefix}_events`])
      ).pipe(
        Effect.provide(sqlClientLayer(options)),
        Effect.flatMap(([row]) =>
          row?.found === true ? Effect.void : Effect.fail(
            new CommandFailed({
              reason: `no table ${options.tablePrefix}_events in ${describeTarget(options).split(",")[0]}: ` +
                "check --table-prefix (or DURABLE_EMITTER_TABLE_PREFIX), or create the tables with 'durable-emitter migrate'"
            })
          )
        )
      ),
    onNone: () =>
      fs.existsSync(path.join(options.dataDir, "pgdata"))
        ? Effect.void
        : Effect.fail(
          new CommandFailed({
            reason: `no embedded store in ${path.resolve(options.dataDir)}: check --data-dir (or DURABLE_EMITTER_DATA_DIR), ` +
              "set DATABASE_URL for PostgreSQL, or create it with 'durable-emitter migrate'"
          })
        )
  })
