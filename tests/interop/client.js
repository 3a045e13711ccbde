#!/usr/bin/env node
// A partner system in another language: Node.js with @grpc/grpc-js and @grpc/proto-loader,
// built from nothing but the repository's protos/ folder, as a partner's developer would.
//
//   node client.js scenario CONFIG.json
//       At the origin node: submit a seizure notice (proto3 JSON, Timestamps as RFC 3339
//       strings); at the recipient node: read it from the inbound stream and acknowledge it;
//       acknowledge it again with an unknown id in one AcknowledgeInboundMessages call;
//       at the origin again: submit an invalid notice and decode the google.rpc.BadRequest
//       from the grpc-status-details-bin trailer. One JSON line per step on stdout; exit 0
//       when every step did what it should, 1 otherwise (the reason on stderr).
//
//   node client.js bulk CONFIG.json NODE ENTRIES.jsonl [BATCH]
//       A bulk load as NODE's partner: every line of ENTRIES.jsonl is a
//       PublishWatchlistEntryRequest in proto3 JSON; they go in PublishWatchlistEntries calls of
//       BATCH entries (default 1000), each retried with the same message ids on UNAVAILABLE or
//       DEADLINE_EXCEEDED. One JSON line per call, then one with the totals and the refused
//       entries (message id, code, field violations).
//
//   node client.js call CONFIG.json NODE METHOD REQUEST.json
//       One unary PartnerGateway call as NODE's partner; prints the response, or the error
//       with its decoded details, as one JSON line. Exit 0 either way (2 on a usage mistake).
//
// CONFIG.json: {"protos": DIR, "roots": PEM, "nodes": {"CN": {"address": "127.0.0.1:PORT",
//   "serverName": "gateway.cn.customs-exchange", "certificate": PEM, "key": PEM}, ...},
//   "origin": "CN", "recipient": "HK", "notice": REQUEST.json, "invalid": REQUEST.json}
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const PROTO_FILES = [
  "customs/gateway/v1/partner.proto",
  "google/rpc/status.proto",
  "google/rpc/error_details.proto",
];
const LOADER_OPTIONS = { longs: String, enums: String, bytes: String, defaults: false, oneofs: true };

function load(protos) {
  // grpc-js side: the service definition, from protos/ alone.
  const definition = protoLoader.loadSync(PROTO_FILES, { ...LOADER_OPTIONS, includeDirs: [protos] });
  const api = grpc.loadPackageDefinition(definition);
  // protobufjs side: message types, to turn proto3 JSON into objects and to decode details.
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(protos, target);
  root.loadSync(PROTO_FILES);
  root.resolveAll();
  return { api, root };
}

// proto3 JSON -> the plain object grpc-js serialises: Timestamps and Durations from their
// string forms, snake_case keys accepted as well as lowerCamelCase, as the JSON mapping says.
function fromJson(type, value) {
  if (type.fullName === ".google.protobuf.Timestamp" && typeof value === "string") {
    const match = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$/.exec(value);
    if (!match) throw new Error(`not an RFC 3339 timestamp: ${value}`);
    const seconds = Math.floor(Date.parse(match[1] + match[3]) / 1000);
    const nanos = match[2] ? Number((match[2].slice(1) + "000000000").slice(0, 9)) : 0;
    return { seconds: String(seconds), nanos };
  }
  if (type.fullName === ".google.protobuf.Duration" && typeof value === "string") {
    const seconds = Number(value.replace(/s$/, ""));
    return { seconds: String(Math.trunc(seconds)), nanos: Math.round((seconds % 1) * 1e9) };
  }
  const out = {};
  for (const [key, item] of Object.entries(value)) {
    const name = key.replace(/_([a-z0-9])/g, (_m, c) => c.toUpperCase());
    const field = type.fields[name];
    if (!field) throw new Error(`${type.fullName}: no field ${key}`);
    const convert = (v) => (field.resolvedType instanceof protobuf.Type ? fromJson(field.resolvedType, v) : v);
    out[name] = Array.isArray(item) ? item.map(convert) : convert(item);
  }
  return out;
}

function timestampText(ts) {
  if (!ts) return null;
  const ms = Number(ts.seconds) * 1000;
  const nanos = String(ts.nanos || 0).padStart(9, "0");
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, `.${nanos}Z`);
}

// google.rpc.Status from the grpc-status-details-bin trailer, with each Any unpacked.
function decodeDetails(root, error) {
  const raw = error.metadata ? error.metadata.get("grpc-status-details-bin") : [];
  if (!raw.length) return null;
  const Status = root.lookupType("google.rpc.Status");
  const status = Status.decode(raw[0]);
  const details = status.details.map((any) => {
    const typeName = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
    const type = root.lookupType(typeName);
    return { "@type": typeName, ...type.toObject(type.decode(any.value), { enums: String }) };
  });
  return { code: status.code, message: status.message, details };
}

function describeError(root, error) {
  return {
    ok: false,
    code: grpc.status[error.code],
    details: error.details,
    status: decodeDetails(root, error),
  };
}

function client(api, config, jurisdiction) {
  const node = config.nodes[jurisdiction];
  const credentials = grpc.credentials.createSsl(
    fs.readFileSync(config.roots),
    fs.readFileSync(node.key),
    fs.readFileSync(node.certificate),
  );
  return new api.customs.gateway.v1.PartnerGateway(node.address, credentials, {
    "grpc.ssl_target_name_override": node.serverName,
    "grpc.default_authority": node.serverName,
  });
}

function unary(stub, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 15000);
    stub[method](request, { deadline }, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

function request(root, method, json) {
  const service = root.lookupService("customs.gateway.v1.PartnerGateway");
  const rpc = service.methods[method];
  if (!rpc) throw new Error(`PartnerGateway has no method ${method}`);
  return fromJson(root.lookupType(rpc.requestType), json);
}

function readJson(file) {
  return JSON.parse(fs.readFileSync(file, "utf8"));
}

function say(step, fields) {
  process.stdout.write(JSON.stringify({ step, ...fields }) + "\n");
}

async function readInbound(stub, messageId) {
  return new Promise((resolve, reject) => {
    const call = stub.StreamInbound({}, { deadline: new Date(Date.now() + 30000) });
    let found = null;
    call.on("data", (message) => {
      if (message.messageId === messageId && !found) {
        found = message;
        call.cancel();
      }
    });
    call.on("error", (error) => {
      if (found && error.code === grpc.status.CANCELLED) resolve(found);
      else reject(error);
    });
    call.on("end", () => (found ? resolve(found) : reject(new Error("stream ended without the message"))));
  });
}

// docs/partners.md shows this function (a test keeps the two the same).
async function acknowledgeAll(stub, messages, batchSize) {
  const totals = { acknowledged: 0, duplicates: 0, refused: [] };
  for (let start = 0; start < messages.length; start += batchSize) {
    const acknowledgements = messages
      .slice(start, start + batchSize)
      .map((message) => ({ messageId: message.messageId, origin: message.origin }));
    let response;
    for (let attempt = 0; ; attempt++) {
      try {
        response = await unary(stub, "AcknowledgeInboundMessages", { acknowledgements });
        break;
      } catch (error) {
        const retry = [grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED].includes(error.code);
        if (!retry || attempt === 4) throw error;  // the same call again: nothing is made twice
        await new Promise((done) => setTimeout(done, 200 * 2 ** attempt));
      }
    }
    for (const result of response.results) {
      if (result.outcome === "BULK_OUTCOME_ACCEPTED") totals.acknowledged++;
      else if (result.outcome === "BULK_OUTCOME_DUPLICATE") totals.duplicates++;
      else totals.refused.push(result);  // result.refused: NOT_FOUND, or INVALID_ARGUMENT on origin
    }
  }
  return totals;
}

async function scenario(configFile) {
  const config = readJson(configFile);
  const { api, root } = load(config.protos);
  const origin = client(api, config, config.origin);
  const recipient = client(api, config, config.recipient);

  const notice = request(root, "SubmitSeizureNotice", readJson(config.notice));
  const accepted = await unary(origin, "SubmitSeizureNotice", notice);
  if (accepted.messageId !== notice.addressing.messageId) throw new Error(`accepted ${accepted.messageId}`);
  say("submitted", {
    node: config.origin,
    messageId: accepted.messageId,
    ledgerIndex: accepted.ledgerIndex,
    acceptedAt: timestampText(accepted.acceptedAt),
  });

  const inbound = await readInbound(recipient, accepted.messageId);
  if (inbound.origin !== `JURISDICTION_${config.origin}`) throw new Error(`origin ${inbound.origin}`);
  say("received", {
    node: config.recipient,
    messageId: inbound.messageId,
    origin: inbound.origin,
    kind: inbound.kind,
    payload: inbound.payload,
    ledgerIndex: inbound.ledgerIndex,
  });

  const ack = await unary(recipient, "AcknowledgeInbound", { messageId: inbound.messageId });
  say("acknowledged", { node: config.recipient, ledgerIndex: ack.ledgerIndex, duplicate: !!ack.duplicate });

  // The same message again and an id the node never received, in one bulk call: the first is a
  // duplicate of the acknowledgement just made, the second is refused alone (NOT_FOUND).
  const unknown = { messageId: require("node:crypto").randomUUID(), origin: inbound.origin };
  const all = await acknowledgeAll(recipient, [inbound, unknown], 1000);
  say("acknowledgedAll", {
    node: config.recipient,
    acknowledged: all.acknowledged,
    duplicates: all.duplicates,
    refused: all.refused.map((result) => ({ position: result.position, code: result.refused.code })),
  });

  const invalid = request(root, "SubmitSeizureNotice", readJson(config.invalid));
  try {
    await unary(origin, "SubmitSeizureNotice", invalid);
  } catch (error) {
    const described = describeError(root, error);
    const badRequest = described.status && described.status.details.find((d) => d["@type"] === "google.rpc.BadRequest");
    if (error.code !== grpc.status.INVALID_ARGUMENT || !badRequest) {
      throw new Error(`invalid submit: expected INVALID_ARGUMENT with a BadRequest, got ${JSON.stringify(described)}`);
    }
    say("refused", {
      node: config.origin,
      code: described.code,
      statusCode: described.status.code,
      fieldViolations: badRequest.fieldViolations,
    });
    return;
  }
  throw new Error("the invalid submit was accepted");
}

// docs/partners.md shows this function (a test keeps the two the same).
async function bulkLoad(stub, requests, batchSize, onBatch) {
  const totals = { accepted: 0, duplicates: 0, refused: [] };
  for (let start = 0; start < requests.length; start += batchSize) {
    const entries = requests.slice(start, start + batchSize);
    let response;
    for (let attempt = 0; ; attempt++) {
      try {
        response = await unary(stub, "PublishWatchlistEntries", { entries });
        break;
      } catch (error) {
        const retry = [grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED].includes(error.code);
        if (!retry || attempt === 4) throw error;  // the same batch again: nothing is made twice
        await new Promise((done) => setTimeout(done, 200 * 2 ** attempt));
      }
    }
    for (const result of response.results) {
      if (result.outcome === "BULK_OUTCOME_ACCEPTED") totals.accepted++;
      else if (result.outcome === "BULK_OUTCOME_DUPLICATE") totals.duplicates++;
      else totals.refused.push(result);
    }
    onBatch(start, response);
  }
  return totals;
}

async function bulk(configFile, jurisdiction, entriesFile, batch) {
  const config = readJson(configFile);
  const { api, root } = load(config.protos);
  const stub = client(api, config, jurisdiction);
  const requests = fs
    .readFileSync(entriesFile, "utf8")
    .split("\n")
    .filter((line) => line.trim())
    .map((line) => request(root, "PublishWatchlistEntry", JSON.parse(line)));
  const totals = await bulkLoad(stub, requests, Number(batch || 1000), (start, response) =>
    say("batch", {
      start,
      accepted: response.accepted || 0,
      duplicates: response.duplicates || 0,
      refused: response.refused || 0,
    }),
  );
  const BadRequest = root.lookupType("google.rpc.BadRequest");
  const refused = totals.refused.map((result) => {
    const status = result.refused;
    const bad = (status.details || [])
      .filter((any) => any.type_url.endsWith("/google.rpc.BadRequest"))
      .flatMap((any) => BadRequest.toObject(BadRequest.decode(Buffer.from(any.value, "base64"))).fieldViolations);
    return { position: result.position, messageId: result.messageId, code: status.code, fieldViolations: bad };
  });
  say("loaded", { accepted: totals.accepted, duplicates: totals.duplicates, refused });
}

async function call(configFile, jurisdiction, method, requestFile) {
  const config = readJson(configFile);
  const { api, root } = load(config.protos);
  const stub = client(api, config, jurisdiction);
  try {
    const response = await unary(stub, method, request(root, method, readJson(requestFile)));
    process.stdout.write(JSON.stringify({ ok: true, response }) + "\n");
  } catch (error) {
    if (error.code === undefined) throw error;
    process.stdout.write(JSON.stringify(describeError(root, error)) + "\n");
  }
}

async function main(argv) {
  if (argv[0] === "scenario" && argv.length === 2) return scenario(argv[1]);
  if (argv[0] === "call" && argv.length === 5) return call(...argv.slice(1));
  if (argv[0] === "bulk" && (argv.length === 4 || argv.length === 5)) return bulk(...argv.slice(1));
  process.stderr.write(
    "usage: client.js scenario CONFIG.json | call CONFIG.json NODE METHOD REQUEST.json" +
      " | bulk CONFIG.json NODE ENTRIES.jsonl [BATCH]\n",
  );
  process.exit(2);
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`interop client failed: ${error.stack || error}\n`);
    process.exit(1);
  },
);
