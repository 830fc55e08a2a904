/**
 * A wire-identical view of `chipingress.pb.CloudEventBatch` that carries each event as the bytes
 * it was stored with, so publishing never decodes and re-encodes a CloudEvent.
 *
 * `repeated io.cloudevents.v1.CloudEvent events = 1` and `repeated bytes events = 1` have the same
 * encoding (field 1, length-delimited, one record per element), and so do a `PublishOptions`
 * message and `bytes` in field 2. A server decoding the request as the real `CloudEventBatch` sees
 * the real CloudEvents (test/transport-rawBatch.test.ts checks this both ways).
 */
import { create, createFileRegistry, type DescMethodUnary, type Message } from "@bufbuild/protobuf"
import type { GenMessage } from "@bufbuild/protobuf/codegenv2"
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema
} from "@bufbuild/protobuf/wkt"
import { ChipIngress, type PublishResponseSchema } from "../gen/chipingress/pb/chip_ingress_pb.js"

const fileName = "durable_emitter/internal/raw_cloud_event_batch.proto"
const typeName = "durable_emitter.internal.RawCloudEventBatch"

const registry = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: fileName,
    package: "durable_emitter.internal",
    syntax: "proto3",
    messageType: [{
      name: "RawCloudEventBatch",
      field: [
        {
          name: "events",
          jsonName: "events",
          number: 1,
          label: FieldDescriptorProto_Label.REPEATED,
          type: FieldDescriptorProto_Type.BYTES
        },
        {
          name: "options",
          jsonName: "options",
          number: 2,
          label: FieldDescriptorProto_Label.OPTIONAL,
          type: FieldDescriptorProto_Type.BYTES
        }
      ]
    }]
  }),
  () => undefined
)

/** The message: `events` are encoded `io.cloudevents.v1.CloudEvent`s, `options` an encoded `PublishOptions` (empty = unset). */
export type RawCloudEventBatch = Message<typeof typeName> & {
  events: Array<Uint8Array>
  options: Uint8Array
}

export const RawCloudEventBatchSchema = registry.getMessage(typeName) as GenMessage<RawCloudEventBatch>

/** `ChipIngress.PublishBatch` with the raw view as its input: same path, same wire format. */
export const rawPublishBatch: DescMethodUnary<typeof RawCloudEventBatchSchema, typeof PublishResponseSchema> = {
  ...ChipIngress.method.publishBatch,
  input: RawCloudEventBatchSchema
}

/** Builds the request message around the stored payloads (no copy; serialization copies once). */
export const rawBatch = (events: ReadonlyArray<Uint8Array>): RawCloudEventBatch =>
  create(RawCloudEventBatchSchema, { events: events as Array<Uint8Array> })

const varintSize = (n: number): number => (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5)

/** Serialized size of a PublishBatch request carrying `events` (without the 5-byte gRPC frame header). */
export const batchRequestBytes = (events: ReadonlyArray<Uint8Array>): number => {
  let total = 0
  for (const e of events) total += 1 + varintSize(e.byteLength) + e.byteLength
  return total
}

/** Serialized size one more event adds to a PublishBatch request. */
export const eventRequestBytes = (event: Uint8Array): number => 1 + varintSize(event.byteLength) + event.byteLength
