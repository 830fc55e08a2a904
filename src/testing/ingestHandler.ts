/**
 * The request handler of the reference ingest server: Publish, PublishBatch (raw, so the events
 * arrive as the bytes the client sent) and Ping, as a connect Node adapter. Each request goes
 * through the faults in a fixed order (refusal, size limit, reset before, latency, hang,
 * injected failure), then each event through validation and rejection, then the recorder, then
 * the reset after and the shaping of the answer.
 */
import type * as http2 from "node:http2"
import { constants } from "node:http2"
import { create, fromBinary, toBinary } from "@bufbuild/protobuf"
import { durationFromMs } from "@bufbuild/protobuf/wkt"
import { Code, ConnectError, createContextKey, createContextValues, type HandlerContext } from "@connectrpc/connect"
import { connectNodeAdapter } from "@connectrpc/connect-node"
import {
  ChipIngress,
  type PublishResponse,
  PublishErrorCode,
  PublishErrorSchema,
  PublishOptionsSchema,
  type PublishResult,
  PublishResponseSchema,
  PublishResultSchema
} from "../gen/chipingress/pb/chip_ingress_pb.js"
import { CloudEventSchema } from "../gen/io/cloudevents/v1/cloudevent_pb.js"
import { RetryInfoSchema } from "../gen/google/rpc/retry_info_pb.js"
import { batchRequestBytes, eventRequestBytes, type RawCloudEventBatch, rawPublishBatch } from "../transport/rawBatch.ts"
import { type FailureSpec, type FaultConsumers, toCode } from "./ingestFaults.ts"
import {
  decodeEnvelope,
  decodeReceived,
  type PublishErrorCodeName,
  type ReceivedEvent,
  type Rejection,
  type RequestRecord
} from "./ingestModel.ts"
import type { IngestRecorder } from "./ingestRecorder.ts"

export interface HandlerOptions {
  readonly recorder: IngestRecorder
  readonly faults: FaultConsumers
  /** True once the server is closing: held requests give up. */
  readonly closed: () => boolean
  readonly pingMessage: string
  readonly compressResponses: boolean
}

const rawRequestKey = createContextKey<http2.Http2ServerRequest | undefined>(undefined, { description: "node request" })

const publishErrorCodes: Record<PublishErrorCodeName, PublishErrorCode> = {
  UNKNOWN: PublishErrorCode.UNKNOWN,
  VALIDATION_FAILED: PublishErrorCode.VALIDATION_FAILED,
  SCHEMA_MISSING: PublishErrorCode.SCHEMA_MISSING,
  ENCODE_ERROR: PublishErrorCode.ENCODE_ERROR,
  DOMAIN_MISCONFIGURATION: PublishErrorCode.DOMAIN_MISCONFIGURATION
}

const failureError = (context: HandlerContext, failure: FailureSpec): ConnectError => {
  const code = toCode(failure.status)
  const metadata: Record<string, string> = {}
  if (failure.pushbackMs !== undefined) metadata["grpc-retry-pushback-ms"] = String(failure.pushbackMs)
  if (failure.retryAfter !== undefined) context.responseHeader.set("retry-after", String(failure.retryAfter))
  const details = failure.retryInfoMs === undefined
    ? []
    : [{ desc: RetryInfoSchema, value: { retryDelay: durationFromMs(failure.retryInfoMs) } }]
  return new ConnectError(failure.message ?? `injected failure (${Code[code]})`, code, metadata, details)
}

const resetNow = (context: HandlerContext, how: "socket" | "stream"): never => {
  const request = context.values.get(rawRequestKey)
  if (request !== undefined) {
    if (how === "socket") request.stream.session?.destroy()
    else request.stream.close(constants.NGHTTP2_INTERNAL_ERROR)
  }
  // Aborted: connect's node adapter does not log it, and nothing more is written.
  throw new ConnectError("injected connection reset", Code.Aborted)
}

/** All or nothing: every event of the batch is reported as not produced. */
const abortTransaction = (results: Array<PublishResult>) => {
  for (const result of results) {
    result.error ??= create(PublishErrorSchema, {
      errorCode: PublishErrorCode.UNKNOWN,
      reason: "transaction aborted: another event of the batch was rejected"
    })
  }
}

export type NodeHandler = (request: http2.Http2ServerRequest, response: http2.Http2ServerResponse) => void

export const makeIngestHandler = (options: HandlerOptions): NodeHandler => {
  const { recorder, faults } = options
  const state = faults.state

  const abandoned = (message: string) => {
    recorder.abandonedRequest()
    return new ConnectError(message, Code.Aborted)
  }
  const sleep = (ms: number, signal: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        clearTimeout(timer)
        reject(abandoned("the client gave up during the injected latency"))
      }
      const timer = setTimeout(() => {
        signal.removeEventListener("abort", onAbort)
        resolve()
      }, ms)
      signal.addEventListener("abort", onAbort, { once: true })
    })

  const refused = (context: HandlerContext): ConnectError | undefined => {
    const refusal = faults.refusal(context.requestHeader.get("authorization"))
    return refusal === undefined ? undefined : new ConnectError(refusal.message, refusal.code)
  }

  /** The whole-request faults, in order; throws the error the request is answered with. */
  const passFaults = async (bytes: number, context: HandlerContext) => {
    const refusal = refused(context)
    if (refusal !== undefined) throw refusal
    const limit = state.maxRequestBytes
    if (limit !== undefined && bytes > limit.limit) {
      throw new ConnectError(`request of ${bytes} bytes exceeds the limit of ${limit.limit} bytes`, toCode(limit.status))
    }
    const resetBefore = faults.takeReset("before")
    if (resetBefore !== undefined) resetNow(context, resetBefore.how)
    if (state.latencyMs > 0) await sleep(state.latencyMs, context.signal)
    if (!(await faults.holdWhileHanging(context.signal, options.closed))) {
      throw abandoned("the client gave up while the server was hanging")
    }
    const failure = faults.takeFailure()
    if (failure !== undefined) throw failureError(context, failure)
  }

  /** Whether anything keeps or inspects whole events (else only their envelope is read). */
  const wholeEvents = () => recorder.wholeEvents || state.rejectPredicates.length > 0

  const readEvent = (payload: Uint8Array, now: number): ReceivedEvent =>
    wholeEvents() ? decodeReceived(payload, now) : decodeEnvelope(payload, now, recorder.needsSeqnum)

  /** The per-event answers; `accepted` gets the events produced. */
  const judge = (payloads: ReadonlyArray<Uint8Array>, now: number, accepted: Array<ReceivedEvent>) => {
    const results: Array<PublishResult> = []
    let rejected = 0
    for (const payload of payloads) {
      let event: ReceivedEvent | undefined
      let rejection: Rejection | undefined
      try {
        event = readEvent(payload, now)
        rejection = faults.rejectionOf(event)
      } catch (error) {
        rejection = { code: "VALIDATION_FAILED", reason: `not a CloudEvent: ${error instanceof Error ? error.message : String(error)}` }
      }
      const result = create(PublishResultSchema, { eventId: event?.id ?? "" })
      if (rejection !== undefined) {
        rejected++
        result.error = create(PublishErrorSchema, { errorCode: publishErrorCodes[rejection.code], reason: rejection.reason })
      } else if (event !== undefined) accepted.push(event)
      results.push(result)
    }
    return { results, rejected }
  }

  const publish = async (
    method: RequestRecord["method"],
    payloads: ReadonlyArray<Uint8Array>,
    bytes: number,
    transaction: boolean,
    context: HandlerContext
  ): Promise<PublishResponse> => {
    const now = Date.now()
    const headers: Record<string, string> = {}
    context.requestHeader.forEach((value, key) => {
      headers[key] = value
    })
    recorder.request({ method, receivedAt: now, events: payloads.length, bytes, encoding: headers["grpc-encoding"] ?? "identity", headers })

    try {
      await passFaults(bytes, context)
    } catch (error) {
      if (error instanceof ConnectError && error.code === Code.Aborted) recorder.changed()
      else recorder.failedRequest()
      throw error
    }

    const accepted: Array<ReceivedEvent> = []
    let { rejected, results } = judge(payloads, now, accepted)
    if (transaction && rejected > 0) {
      abortTransaction(results)
      rejected = results.length
      accepted.length = 0
    }
    recorder.produced(accepted, rejected)

    const resetAfter = faults.takeReset("after")
    if (resetAfter !== undefined) resetNow(context, resetAfter.how)

    const mode = state.results
    results = mode === "full" ? results : mode === "empty" ? [] : results.slice(0, mode.count)
    return create(PublishResponseSchema, { results })
  }

  return connectNodeAdapter({
    // Compressed requests are accepted; responses are compressed only when asked for (like a
    // grpc-go server, which does not compress responses by default).
    compressMinBytes: options.compressResponses ? 1024 : 0xffff_ffff,
    contextValues: (request) => createContextValues().set(rawRequestKey, "stream" in request ? request : undefined),
    routes: (router) => {
      // Registered first: the service registers every method (PublishBatch as "unimplemented"),
      // and the raw PublishBatch below replaces that path.
      router.service(ChipIngress, {
        publish: (event, context) => {
          const payload = toBinary(CloudEventSchema, event)
          return publish("Publish", [payload], payload.byteLength, false, context)
        },
        ping: (_request, context) => {
          const refusal = refused(context)
          if (refusal !== undefined) throw refusal
          return { message: options.pingMessage }
        }
      })
      router.rpc(rawPublishBatch, (batch: RawCloudEventBatch, context) => {
        const optionsBytes = batch.options.byteLength
        const bytes = batchRequestBytes(batch.events) + (optionsBytes > 0 ? eventRequestBytes(batch.options) : 0)
        const publishOptions = optionsBytes > 0 ? fromBinary(PublishOptionsSchema, batch.options) : undefined
        return publish("PublishBatch", batch.events, bytes, publishOptions?.transactionEnabled === true, context)
      })
    }
  })
}
