/**
 * The reference ingest server: a real Connect/gRPC server (HTTP/2, h2c or TLS) implementing the
 * Chip Ingress API (`Publish`, `PublishBatch`, `Ping`). It records what it receives and injects
 * faults on demand. Used by tests, the demo and the benchmark; runnable in its own process
 * through ./ingest-server-main.ts (and ./IngestServerProcess.ts).
 *
 * Read in the order a request flows:
 * - ./ingestListener.ts: the HTTP/2 listener and its connections;
 * - ./ingestHandler.ts: the gRPC methods, applying the faults and judging each event;
 * - ./ingestFaults.ts: the fault state, its setters and its consumers (JSON form and Schema in
 *   ./ingestFaultConfig.ts);
 * - ./ingestModel.ts: received events, stats, decoding and validation (pure);
 * - ./ingestRecorder.ts: what is kept (record modes, extra recorders; ./seqnumLedger.ts for the
 *   bounded "seqnums" mode).
 * This file only composes them.
 */
import { Context, Effect, Layer, Schema, type Scope } from "effect"
import { makeIngestHandler } from "./ingestHandler.ts"
import { type FaultConfig, type IngestFaults, makeFaults } from "./ingestFaults.ts"
import { makeListener } from "./ingestListener.ts"
import { type IngestReceived, jsonLinesRecorder, makeRecorder, type RecordMode, type Recorder } from "./ingestRecorder.ts"

export type { AttributeValue, IngestStats, ReceivedEvent, RequestRecord } from "./ingestModel.ts"
export { receivedEventJson } from "./ingestModel.ts"
export type { IngestReceived, ReceivedSequences, RecordMode, Recorder, SampleRecorder } from "./ingestRecorder.ts"
export { jsonLinesRecorder, sampleRecorder } from "./ingestRecorder.ts"
export type { SequenceSummary } from "./seqnumLedger.ts"
export type {
  FailureSpec,
  FaultConfig,
  FaultState,
  IngestFaults,
  PublishErrorCodeName,
  RejectPredicate,
  ResetSpec,
  ResultsMode,
  StatusInput
} from "./ingestFaults.ts"
export { decodeFaultConfig } from "./ingestFaults.ts"

export interface IngestServerOptions {
  /** Default 127.0.0.1. */
  readonly host?: string
  /** Default 0: an ephemeral port. */
  readonly port?: number
  /**
   * What to keep in memory (see ./ingestRecorder.ts): full events (default), every id, the
   * seqnums as per-(source, type) intervals (exact duplicates in bounded memory), or only counts.
   * Unless something needs whole events ("events", JSON lines, a whole-event recorder, rejection
   * predicates) only each event's envelope is decoded (id, source, spec_version, type, and the
   * seqnum for "seqnums"): enough for validation and rejection rules, at a fraction of the CPU.
   */
  readonly record?: RecordMode
  /** Appends every produced event to this file as a JSON line. */
  readonly jsonl?: string
  /** More recorders, called for every produced event after the server's own. */
  readonly recorders?: ReadonlyArray<Recorder>
  /** With record "seqnums": how many seqnum intervals to hold at most. Default 1 000 000 (about 16 MB). */
  readonly maxSeqnumRanges?: number
  /** Initial faults. */
  readonly faults?: FaultConfig
  /** Ping's answer. Default "pong". */
  readonly pingMessage?: string
  /** Source of randomness for `failFraction`. Default Math.random. */
  readonly random?: () => number
  /** Serve TLS (`https://` URL) with this key and certificate (PEM) instead of h2c. */
  readonly tls?: { readonly key: string | Buffer; readonly cert: string | Buffer }
  /** Compress responses over 1 KiB when the client accepts it (connect's default). Default false. */
  readonly compressResponses?: boolean
  /** How many request records to keep. Default 100. */
  readonly requestLogSize?: number
}

export interface IngestServerHandle {
  /** `http://host:port` (`https://` with `tls`), for GrpcTransport's `url`. */
  readonly url: string
  readonly port: number
  readonly received: IngestReceived
  readonly faults: IngestFaults
  /** Open HTTP/2 connections right now. */
  readonly connections: () => number
  /** Drops open connections, stops listening, flushes the JSON lines file. */
  readonly close: () => Promise<void>
}

/** Starts the server; resolves once it listens. */
export const startIngestServer = async (options: IngestServerOptions = {}): Promise<IngestServerHandle> => {
  const host = options.host ?? "127.0.0.1"
  const recorder = makeRecorder({
    mode: options.record ?? "events",
    requestLogSize: options.requestLogSize ?? 100,
    recorders: [...(options.jsonl === undefined ? [] : [jsonLinesRecorder(options.jsonl)]), ...(options.recorders ?? [])],
    ...(options.maxSeqnumRanges === undefined ? {} : { maxSeqnumRanges: options.maxSeqnumRanges })
  })
  const lifecycle = { closed: false }
  // The faults close and reopen the listener ("refuse"); the handler reads the faults; the
  // listener serves the handler, which exists before the first request (after `start`).
  const listener = makeListener({
    host,
    port: options.port ?? 0,
    tls: options.tls,
    handler: (request, response) => handler(request, response),
    onConnectionClosed: recorder.changed
  })
  const faults = makeFaults(listener, options.random)
  const handler = makeIngestHandler({
    recorder,
    faults: faults.consumers,
    closed: () => lifecycle.closed,
    pingMessage: options.pingMessage ?? "pong",
    compressResponses: options.compressResponses === true
  })

  try {
    await listener.start()
  } catch (error) {
    await recorder.close() // the JSON lines file, if any, was opened
    throw error
  }
  if (options.faults !== undefined) await faults.control.apply(options.faults)

  const port = listener.port()
  const url = `${options.tls === undefined ? "http" : "https"}://${host.includes(":") ? `[${host}]` : host}:${port}`
  return {
    url,
    port,
    received: recorder.received,
    faults: faults.control,
    connections: listener.connections,
    close: async () => {
      if (lifecycle.closed) return
      lifecycle.closed = true
      faults.consumers.releaseHeld()
      await listener.stop()
      await recorder.close()
    }
  }
}

export class IngestServerError extends Schema.TaggedError<IngestServerError>()("IngestServerError", {
  reason: Schema.String
}) {
  override get message() {
    return `ingest server: ${this.reason}`
  }
}

/** The Effect face of the reference ingest server: the handle as a service, closed with its scope. */
export class IngestServer extends Context.Service<IngestServer, IngestServerHandle>()("durable-emitter/testing/IngestServer") {
  static readonly make = (options: IngestServerOptions = {}): Effect.Effect<IngestServerHandle, IngestServerError, Scope.Scope> =>
    Effect.acquireRelease(
      Effect.tryPromise({
        try: () => startIngestServer(options),
        catch: (error) => new IngestServerError({ reason: error instanceof Error ? error.message : String(error) })
      }),
      (handle) => Effect.promise(() => handle.close())
    )

  static readonly layer = (options: IngestServerOptions = {}): Layer.Layer<IngestServer, IngestServerError> =>
    Layer.effect(IngestServer, IngestServer.make(options))
}
