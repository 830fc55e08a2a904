/**
 * The one place where resolved options become the Store and the Transport: PostgreSQL with
 * `databaseUrl`, else the embedded PGlite store in `dataDir`; the gRPC transport to `ingestUrl`.
 * Used by `DurableEmitter`, the CLI's store commands and the demo, and the benchmark.
 *
 * Each implementation is loaded only when its layer is built: an application on PostgreSQL never
 * loads PGlite's WebAssembly, and the CLI's `--help` loads neither.
 */
import { Effect, Layer, Option } from "effect"
import type { InvalidConfig, PackageMissing, StoreError, StoreLocked } from "../Errors.ts"
import type { SqlClient } from "effect/sql"
import type { Store } from "../Store.ts"
import { serverCommitBoundMs } from "../sequencer/outcome.ts"
import type { Transport } from "../Transport.ts"
import type { EmitterOptions } from "./options.ts"

/** What a caller other than the emitter itself may change: the CLI uses a small pool of its own. */
export interface StoreTuning {
  /** Default: `maxConnections`. */
  readonly maxConnections?: number
  /** PostgreSQL's `application_name`. Default: `name`. */
  readonly applicationName?: string
}

/**
 * The Store the options ask for; building it runs the migrations. Its query timeout (on
 * PostgreSQL also the server's `statement_timeout`) is shorter than the commit's share of
 * `commitTimeout`, so a slow commit ends with the database's answer, not with an unknown outcome.
 */
export const storeLayer = (
  options: EmitterOptions,
  tuning: StoreTuning = {}
): Layer.Layer<Store, StoreError | StoreLocked | InvalidConfig | PackageMissing> =>
  Option.match(options.databaseUrl, {
    onSome: (url) =>
      Layer.unwrap(Effect.map(Effect.promise(() => import("../store/PgStore.ts")), (PgStore) =>
        PgStore.layer({
          url,
          tablePrefix: options.tablePrefix,
          maxConnections: tuning.maxConnections ?? options.maxConnections,
          connectTimeout: options.connectTimeoutMs,
          transactionPooling: options.transactionPooling,
          queryTimeout: serverCommitBoundMs(options.commitTimeoutMs),
          applicationName: tuning.applicationName ?? options.name
        }))),
    onNone: () =>
      Layer.unwrap(Effect.map(Effect.promise(() => import("../store/PgliteStore.ts")), (PgliteStore) =>
        PgliteStore.layer({ dataDir: options.dataDir, tablePrefix: options.tablePrefix, queryTimeout: serverCommitBoundMs(options.commitTimeoutMs) })))
  })

/** The PostgreSQL Store on the application's SqlClient from the context (its pool; the outbox's). */
export const storeOnClientLayer = (options: EmitterOptions): Layer.Layer<Store, StoreError | InvalidConfig, SqlClient.SqlClient> =>
  Layer.unwrap(Effect.map(Effect.promise(() => import("../store/PgStore.ts")), (PgStore) =>
    PgStore.layerFromClient({ tablePrefix: options.tablePrefix, queryTimeout: options.commitTimeoutMs })))

/** The gRPC Transport to `ingestUrl`, with the request deadline the Publisher's lease rules assume. */
export const transportLayer = (options: EmitterOptions): Layer.Layer<Transport, InvalidConfig> =>
  Layer.unwrap(Effect.map(Effect.promise(() => import("../transport/GrpcTransport.ts")), (GrpcTransport) =>
    GrpcTransport.layer({
      url: options.ingestUrl,
      headers: options.ingestHeaders,
      gzip: options.gzip,
      timeout: options.requestTimeoutMs,
      maxRequestBytes: options.maxRequestBytes
    })))
