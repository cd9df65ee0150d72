// A Node.js client of Raftka that knows nothing but the contract's .proto files, as a new
// user in another language would write it: @grpc/grpc-js, @grpc/proto-loader over
// proto/raftka/v1/*.proto, protobufjs to decode the standard error details, and the health
// protocol's own .proto (from grpc-health-check). No generated code, no Python.
//
//   node interop.mjs '{"bootstrap": ["127.0.0.1:7001", ...], "protoRoot": ".../proto",
//                      "googleProtos": "<dir holding google/rpc/status.proto>"}'
//
// googleProtos: the standard google/rpc/status.proto and error_details.proto. A Node.js
// project gets them from the npm package google-proto-files (Node >= 22, 80 MB) or a
// googleapis checkout; the test passes the copy that googleapis-common-protos (a Raftka
// dependency) installs, the same files.
//
// It drives a running cluster through what a client needs (metadata, a topic created at a
// node that is not the controller leader, produce of plain records and of a RecordBatch v2
// built here, fetch with decoded records, the errors with their standard details, health
// per service name) and prints one JSON object of what it observed on stdout;
// tests/interop/test_nodejs_client.py asserts on it. Every call has a deadline and every
// wait is bounded, so the script always ends.

import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");
const { protoPath: healthProtoPath } = require("grpc-health-check");

const config = JSON.parse(process.argv[2]);
const CALL_TIMEOUT_MS = 10_000;
const WAIT_STEP_MS = 100;
const WAIT_MAX_STEPS = 200; // 20 s for a partition leader to be elected
const CLIENT_SERVICES = ["", "raftka.v1.Broker", "raftka.v1.Admin", "raftka.v1.GroupCoordinator",
                         "raftka.v1.RaftPeer"];

// ------------------------------------------------------------------------- the contract
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true,
                         oneofs: true };
const raftka = grpc.loadPackageDefinition(protoLoader.loadSync(
  ["raftka/v1/broker.proto", "raftka/v1/admin.proto", "raftka/v1/errors.proto"],
  { ...LOADER_OPTIONS, includeDirs: [config.protoRoot] })).raftka.v1;
const healthPackage = grpc.loadPackageDefinition(protoLoader.loadSync(
  healthProtoPath, LOADER_OPTIONS)).grpc.health.v1;

// google.rpc.Status and google.rpc.ErrorInfo: what grpc-status-details-bin holds.
const googleRoot = new protobuf.Root();
googleRoot.resolvePath = (origin, target) =>
  target.startsWith("google/protobuf/") ? target  // protobufjs knows the well-known types
    : path.join(config.googleProtos, target);
googleRoot.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]);
const Status = googleRoot.lookupType("google.rpc.Status");
const ErrorInfoType = googleRoot.lookupType("google.rpc.ErrorInfo");

// ------------------------------------------------------------------------- helpers
const clients = new Map();
function client(service, address) {
  const key = `${service}@${address}`;
  if (!clients.has(key)) {
    const ctor = service === "Health" ? healthPackage.Health : raftka[service];
    clients.set(key, new ctor(address, grpc.credentials.createInsecure()));
  }
  return clients.get(key);
}

function call(service, address, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + CALL_TIMEOUT_MS);
    client(service, address)[method](request, { deadline }, (err, response) =>
      err ? reject(err) : resolve(response));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// What a failed call tells a client: status, message, and the standard details decoded.
function describeError(err) {
  const out = { code: err.code, codeName: grpc.status[err.code], details: err.details,
                errorInfo: null, statusDetailsMatch: null };
  const raw = err.metadata ? err.metadata.get("grpc-status-details-bin") : [];
  if (raw.length) {
    const status = Status.decode(raw[0]);
    out.statusDetailsMatch = status.code === err.code && status.message === err.details;
    for (const any of status.details) {
      if (any.type_url === "type.googleapis.com/google.rpc.ErrorInfo") {
        const info = ErrorInfoType.decode(any.value);
        out.errorInfo = { reason: info.reason, domain: info.domain,
                          metadata: Object.fromEntries(Object.entries(info.metadata)) };
      }
    }
  }
  return out;
}

async function expectError(promise) {
  try {
    const response = await promise;
    return { unexpectedSuccess: JSON.parse(JSON.stringify(response)) };
  } catch (err) {
    return describeError(err);
  }
}

// ------------------------------------------------------------------------- RecordBatch v2
// Kafka's RecordBatch v2, uncompressed, written field by field (the layout is in
// proto/raftka/v1/recordbatch.py and Kafka's documentation).
const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32c(buf) {
  let crc = 0xffffffff;
  for (const byte of buf) crc = CRC32C_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function varint(value) { // zigzag + LEB128 of a signed integer
  let z = (BigInt(value) << 1n) ^ (BigInt(value) >> 63n);
  z &= (1n << 64n) - 1n;
  const bytes = [];
  while (z > 0x7fn) { bytes.push(Number((z & 0x7fn) | 0x80n)); z >>= 7n; }
  bytes.push(Number(z));
  return Buffer.from(bytes);
}

function bytesField(b) {
  return b === null ? varint(-1) : Buffer.concat([varint(b.length), b]);
}

function encodeRecord(index, key, value, headers, timestampDelta) {
  const body = Buffer.concat([
    Buffer.from([0]), varint(timestampDelta), varint(index), bytesField(key), bytesField(value),
    varint(headers.length),
    ...headers.map(([k, v]) => Buffer.concat([bytesField(Buffer.from(k, "utf8")),
                                               bytesField(v)])),
  ]);
  return Buffer.concat([varint(body.length), body]);
}

function batch(recordsSection, count, timestampMs) {
  const header = Buffer.alloc(61);
  header.writeBigInt64BE(0n, 0);                                  // baseOffset (set by the leader)
  header.writeInt32BE(61 - 12 + recordsSection.length, 8);        // batchLength
  header.writeInt32BE(-1, 12);                                    // partitionLeaderEpoch
  header.writeInt8(2, 16);                                        // magic
  header.writeInt16BE(0, 21);                                     // attributes: no compression
  header.writeInt32BE(count - 1, 23);                             // lastOffsetDelta
  header.writeBigInt64BE(BigInt(timestampMs), 27);                // baseTimestamp
  header.writeBigInt64BE(BigInt(timestampMs), 35);                // maxTimestamp
  header.writeBigInt64BE(-1n, 43);                                // producerId
  header.writeInt16BE(-1, 51);                                    // producerEpoch
  header.writeInt32BE(-1, 53);                                    // baseSequence
  header.writeInt32BE(count, 57);                                 // recordCount
  const out = Buffer.concat([header, recordsSection]);
  out.writeUInt32BE(crc32c(out.subarray(21)), 17);               // CRC-32C of attributes..end
  return out;
}

function recordBatch(records, timestampMs) {
  return batch(Buffer.concat(records.map(([key, value, headers], i) =>
    encodeRecord(i, key, value, headers, 0))), records.length, timestampMs);
}

// A sound header and CRC over records that do not decode: the first record claims 63
// bytes where 8 follow (a producer's encoder bug).
function undecodableBatch(timestampMs) {
  return batch(Buffer.from([0x7e, 0, 0, 0, 2, 0x6b, 2, 0x76, 0]), 1, timestampMs);
}

// ------------------------------------------------------------------------- the run
async function main() {
  const out = { bootstrap: config.bootstrap };
  const first = config.bootstrap[0];
  const meta = await call("Broker", first, "Metadata", { topics: [] });
  const addressOf = Object.fromEntries(meta.brokers.map((b) => [b.id, b.address]));
  out.controllerId = meta.controller_id;

  // Admin at a node that does not lead the controller: it forwards the call.
  const adminNode = meta.brokers.find((b) => b.id !== meta.controller_id);
  const topic = "interop-js";
  const created = await call("Admin", adminNode.address, "CreateTopic",
                             { name: topic, partitions: 1, replication_factor: 3 });
  out.created = { atNode: adminNode.id, name: created.topic.name,
                  partitions: created.topic.partitions.length };

  let leaderId = 0;
  for (let step = 0; step < WAIT_MAX_STEPS && !leaderId; step++) {
    const m = await call("Broker", first, "Metadata", { topics: [topic] });
    const candidate = m.topics[0].partitions[0].leader_id;
    if (candidate) {  // confirmed by the candidate itself
      const own = await call("Broker", addressOf[candidate], "Metadata", { topics: [topic] });
      if (own.topics[0].partitions[0].leader_id === candidate) leaderId = candidate;
    }
    if (!leaderId) await sleep(WAIT_STEP_MS);
  }
  if (!leaderId) throw new Error(`no leader for ${topic}/0 within the wait`);
  const leader = addressOf[leaderId];
  const followerId = meta.brokers.map((b) => b.id).find((id) => id !== leaderId);
  out.leader = { id: leaderId, address: leader };
  out.follower = { id: followerId, address: addressOf[followerId] };

  // Produce: plain protobuf records, then a RecordBatch v2 built here.
  const plain = await call("Broker", leader, "Produce", {
    topic, partition: 0, acks: "ACKS_ALL", records: { records: [
      { key: Buffer.from("k0"), value: Buffer.from("plain-0"),
        headers: [{ key: "h", value: Buffer.from("1") }] },
      { value: Buffer.from("plain-1") },
    ] } });
  out.producePlain = { base: plain.base_offset, last: plain.last_offset };
  const now = Date.now();
  const built = recordBatch([[Buffer.from("k2"), Buffer.from("batch-2"), [["trace", Buffer.from("t")]]],
                             [null, Buffer.from("batch-3"), []],
                             [Buffer.from("k4"), null, []]], now);
  const raw = await call("Broker", leader, "Produce",
                         { topic, partition: 0, acks: "ACKS_ALL", record_batches: built });
  out.produceBatch = { base: raw.base_offset, last: raw.last_offset };

  // Errors, each with the standard details decoded.
  out.errors = {
    unknownTopic: await expectError(call("Broker", leader, "Produce", {
      topic: "no-such-topic", partition: 0, records: { records: [{ value: Buffer.from("x") }] } })),
    corruptBatch: await expectError(call("Broker", leader, "Produce", {
      topic, partition: 0, record_batches: undecodableBatch(now) })),
    notLeader: await expectError(call("Broker", addressOf[followerId], "Produce", {
      topic, partition: 0, records: { records: [{ value: Buffer.from("x") }] } })),
    offsetOutOfRange: await expectError(call("Broker", leader, "Fetch", {
      topic, partition: 0, offset: 1000, decode_records: true })),
  };

  // Fetch with decoded records: everything produced, nothing of the refused batch.
  const fetched = await call("Broker", leader, "Fetch",
                             { topic, partition: 0, offset: 0, decode_records: true });
  out.fetched = fetched.records.map((r) => ({
    offset: r.offset, key: r.key == null ? null : r.key.toString(),
    value: r.value == null ? null : r.value.toString(),
    headers: r.headers.map((h) => [h.key, h.value == null ? null : h.value.toString()]),
    timestampMs: r.timestamp_ms,
  }));
  out.fetchedHighWatermark = fetched.high_watermark;
  out.fetchedNextOffset = fetched.next_offset;
  out.producedAtMs = now;

  // Health per service name, on every node.
  out.health = {};
  for (const b of meta.brokers) {
    out.health[b.id] = {};
    for (const service of [...CLIENT_SERVICES, "raftka.v1.NoSuchService"]) {
      try {
        out.health[b.id][service] = (await call("Health", b.address, "Check", { service })).status;
      } catch (err) {
        out.health[b.id][service] = grpc.status[err.code];
      }
    }
  }
  return out;
}

main().then((out) => {
  process.stdout.write(JSON.stringify(out) + "\n");
  for (const c of clients.values()) c.close();
}, (err) => {
  process.stderr.write(`interop.mjs failed: ${err.stack || err}\n`);
  if (err.code !== undefined) process.stderr.write(JSON.stringify(describeError(err)) + "\n");
  for (const c of clients.values()) c.close();
  process.exitCode = 1;
});
