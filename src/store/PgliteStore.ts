/**
 * The embedded Store: PGlite (PostgreSQL compiled to WebAssembly) in this process, driven by
 * `@effect/sql-pg` over an in-process wire-protocol bridge (one connection), so the SQL and the
 * migrations are exactly the PostgreSQL Store's (`PgStore.layerFromClient`).
 *
 * Layout of `dataDir` (created if missing):
 *   durable-emitter.lock   the pid of the process that has it open, and on Linux that process's
 *                          boot and start time (see `acquireLock`)
 *   pgdata/                PGlite's PostgreSQL data directory
 *
 * Durability: a commit survives a crash of this process (kill -9, an uncaught exception), not a
 * power loss or an OS crash. PGlite's file system writes straight through to the host's files
 * (Emscripten NODEFS: every write is a `write(2)`), and `synchronous_commit` is on, so when
 * `append` returns the commit's WAL is in the operating system's hands; after a crash the next
 * open replays it. PGlite runs PostgreSQL with fsync off and NODEFS makes fsync a no-op, so
 * nothing is forced to the disk: what the OS had not written out is lost with the machine.
 *
 * `dataDir: "memory://"` keeps the database in memory, without a lock: for tests.
 */
import type { PGlite } from "@electric-sql/pglite"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, type Scope } from "effect"
import type * as Reactivity from "effect/reactivity/Reactivity"
import type { SqlClient } from "effect/sql"
import * as path from "node:path"
import { InvalidConfig, PackageMissing, StoreError, type StoreLocked } from "../Errors.ts"
import type { Store } from "../Store.ts"
import { describeFault, readDriverFault } from "./driverFault.ts"
import { makeBridge } from "./pgliteBridge.ts"
import { acquireLock } from "./pgliteLock.ts"
import * as PgStore from "./PgStore.ts"
import { tables } from "./pgSchema.ts"

export interface PgliteStoreClientOptions {
  /** The data directory, created if missing; `"memory://"` for an in-memory database (tests). */
  readonly dataDir: string
}

export interface PgliteStoreOptions extends PgliteStoreClientOptions, PgStore.PgStoreClientOptions {}

/** The `dataDir` of an in-memory database: nothing is written to disk, nothing is locked. */
export const memory = "memory://"

export const pgdataDirName = "pgdata"

export { acquireLock, lockFileName, processIdentity } from "./pgliteLock.ts"

// ---------------------------------------------------------------------------------------------
// PGlite and the client

/**
 * A freshly initialized data directory, made once per process and copied into every later
 * in-memory database: initdb takes most of a second, loading the copy a fraction of that.
 */
let memoryTemplate: Promise<Blob> | undefined

/**
 * PGlite's defaults, plus `synchronous_commit` pinned on (it is PGlite's default today): a commit
 * returns only after its WAL is written, which is what makes it survive a crash. With it off, a
 * SIGKILL loses every commit since the last WAL write (tried: all 1 550 rows of 31 batches). On
 * the command line it outranks postgresql.conf, ALTER SYSTEM, and the bridge's DISCARD ALL.
 */
const startParamsOf = (Pglite: typeof PGlite) => [...Pglite.defaultStartParams, "-c", "synchronous_commit=on"]

/**
 * PGlite is an optional peer dependency (27 MB that a PostgreSQL-only app does not install), so it
 * is loaded here, when an embedded store opens, and its absence is a typed error naming it.
 */
const loadPglite: Effect.Effect<typeof PGlite, PackageMissing | StoreError> = Effect.tryPromise({
  try: () => import("@electric-sql/pglite").then((module) => module.PGlite),
  catch: (error) =>
    (error as NodeJS.ErrnoException | undefined)?.code === "ERR_MODULE_NOT_FOUND" && String(error).includes("@electric-sql/pglite")
      ? new PackageMissing({ packageName: "@electric-sql/pglite", feature: "the embedded store (used when no databaseUrl is set)" })
      : new StoreError({ operation: "open", reason: `cannot load @electric-sql/pglite: ${String(error)}`, retryable: false })
})

const createInMemory = async (Pglite: typeof PGlite): Promise<PGlite> => {
  const startParams = startParamsOf(Pglite)
  if (memoryTemplate !== undefined) {
    const template = await memoryTemplate.catch(() => undefined)
    if (template !== undefined) return Pglite.create({ loadDataDir: template, startParams })
  }
  const pglite = await Pglite.create(memory, { startParams })
  if (memoryTemplate === undefined) {
    memoryTemplate = pglite.dumpDataDir("none")
    memoryTemplate.catch(() => (memoryTemplate = undefined))
    await memoryTemplate.catch(() => undefined)
  }
  return pglite
}

const openPglite = (pgdata: string | undefined): Effect.Effect<PGlite, PackageMissing | StoreError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.flatMap(loadPglite, (Pglite) => Effect.tryPromise({
      try: () => pgdata === undefined ? createInMemory(Pglite) : Pglite.create(pgdata, { startParams: startParamsOf(Pglite) }),
      catch: (error) =>
        new StoreError({
          operation: "open",
          reason: `cannot open PGlite in ${pgdata ?? memory}: ${String(error)}`,
          retryable: false,
          committed: "no"
        })
    })),
    (pglite) =>
      Effect.tryPromise(() => pglite.close()).pipe(
        Effect.catch((error) => Effect.logWarning("PGlite did not close cleanly", error))
      )
  )

/**
 * A PgClient (and SqlClient) on PGlite in `dataDir`, for the scope: the lock is taken first and
 * released last, PGlite is closed after the client.
 */
export const makeClient = (
  options: PgliteStoreClientOptions
): Effect.Effect<PgClient.PgClient, StoreError | StoreLocked | InvalidConfig | PackageMissing, Scope.Scope | Reactivity.Reactivity> =>
  Effect.gen(function*() {
    const { dataDir } = options
    if (typeof dataDir !== "string" || dataDir.length === 0) {
      return yield* new InvalidConfig({ option: "dataDir", rule: "must be a non-empty path, or \"memory://\"" })
    }
    let pgdata: string | undefined
    if (dataDir !== memory) {
      const dir = path.resolve(dataDir)
      yield* acquireLock(dir)
      pgdata = path.join(dir, pgdataDirName)
    }
    const pglite = yield* openPglite(pgdata)
    const bridge = makeBridge(pglite)
    return yield* PgClient.makeClient({
      stream: bridge.connect,
      ssl: false,
      username: "postgres",
      database: "postgres",
      applicationName: "durable-emitter"
    }).pipe(
      Effect.mapError((error) => {
        // In-process: a bridge that cannot connect will not connect later either.
        const driver = readDriverFault(error)
        return new StoreError({ operation: "connect", reason: describeFault(driver), retryable: false, committed: "no", driver })
      })
    )
  })

/** `PgClient | SqlClient` on PGlite in `dataDir` (see `makeClient`). */
export const layerClient = (
  options: PgliteStoreClientOptions
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, StoreError | StoreLocked | InvalidConfig | PackageMissing> =>
  PgClient.layerFrom(makeClient(options))

/**
 * The embedded Store: PGlite in `dataDir`, the PostgreSQL Store's SQL and migrations. Fails with
 * `StoreLocked` when another process (or another layer of this one) has the directory open.
 */
export const layer = (options: PgliteStoreOptions): Layer.Layer<Store, InvalidConfig | StoreError | StoreLocked | PackageMissing> =>
  Layer.unwrap(Effect.gen(function*() {
    yield* tables(options.tablePrefix) // fail on a bad prefix before opening anything
    const { dataDir: _, ...storeOptions } = options
    return PgStore.layerFromClient(storeOptions).pipe(Layer.provide(layerClient(options)))
  }))
