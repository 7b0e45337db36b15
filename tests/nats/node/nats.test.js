// The official Node client (`nats` from npm) against `ringbrokerd --nats`.
// scripts/test-nats starts the daemons, installs the client into
// target/nats-clients/node and sets RINGBROKER_NATS_URL (no auth) and
// RINGBROKER_NATS_AUTH_URL (token "s3cret", user alice/pw). Proves pub/sub with
// wildcards, queue groups, request-reply with timeout, headers, no-responders,
// auto-unsubscribe and auth.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { connect, headers, ErrorCode } = require("nats");

const WAIT = 5000;
const enc = new TextEncoder();
const dec = new TextDecoder();

function url(name) {
  const value = process.env[name];
  assert.ok(value, `${name} is not set: run through scripts/test-nats`);
  return value;
}

const open = (options = {}) => connect({ servers: url("RINGBROKER_NATS_URL"), ...options });

/** The next `n` messages of `sub`, failing after WAIT. */
async function take(sub, n) {
  const got = [];
  const timer = setTimeout(() => sub.unsubscribe(), WAIT);
  for await (const m of sub) {
    got.push(m);
    if (got.length === n) break;
  }
  clearTimeout(timer);
  assert.equal(got.length, n, `only ${got.length} of ${n} messages`);
  return got;
}

test("pub/sub with wildcards", async () => {
  const nc = await open();
  const seen = { users: [], shipped: [] };
  nc.subscribe("user.>", { callback: (_, m) => seen.users.push(m.subject) });
  nc.subscribe("orders.*.shipped", {
    callback: (_, m) => seen.shipped.push(`${m.subject}=${dec.decode(m.data)}`),
  });
  await nc.flush();
  const pub = await open();
  for (const s of ["user.1", "user.2.login", "orders.eu.shipped", "orders.eu.x.shipped", "user"]) {
    pub.publish(s, enc.encode(s));
  }
  await pub.flush();
  const deadline = Date.now() + WAIT;
  while (seen.users.length + seen.shipped.length < 3 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  // Anything that should not match would have come by now.
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.deepEqual(seen.users, ["user.1", "user.2.login"]);
  assert.deepEqual(seen.shipped, ["orders.eu.shipped=orders.eu.shipped"]);
  await pub.close();
  await nc.close();
});

test("a queue group shares messages", async () => {
  const total = 200;
  const counts = [0, 0];
  let finished;
  const done = new Promise((resolve) => (finished = resolve));
  const members = [];
  for (const i of [0, 1]) {
    const nc = await open();
    nc.subscribe("jobs.new", {
      queue: "workers",
      callback: () => {
        counts[i] += 1;
        if (counts[0] + counts[1] === total) finished();
      },
    });
    await nc.flush();
    members.push(nc);
  }
  const pub = await open();
  for (let i = 0; i < total; i++) pub.publish("jobs.new", enc.encode(String(i)));
  await pub.flush();
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error(`got ${counts}`)), WAIT));
  await Promise.race([done, timeout]);
  assert.equal(counts[0] + counts[1], total);
  assert.ok(counts[0] > 0 && counts[1] > 0, `both members: ${counts}`);
  for (const nc of [...members, pub]) await nc.close();
});

test("request-reply and timeout", async () => {
  const responder = await open();
  responder.subscribe("svc.echo", {
    callback: (_, m) => m.respond(enc.encode(`echo: ${dec.decode(m.data)}`)),
  });
  responder.subscribe("svc.silent");
  await responder.flush();
  const nc = await open();
  for (let i = 0; i < 20; i++) {
    const reply = await nc.request("svc.echo", enc.encode(String(i)), { timeout: WAIT });
    assert.equal(dec.decode(reply.data), `echo: ${i}`);
  }
  const start = Date.now();
  await assert.rejects(nc.request("svc.silent", enc.encode("x"), { timeout: 300 }), (e) => e.code === ErrorCode.Timeout);
  assert.ok(Date.now() - start >= 250);
  await nc.close();
  await responder.close();
});

test("no responders", async () => {
  const nc = await open();
  const start = Date.now();
  await assert.rejects(nc.request("nobody.home", enc.encode("?"), { timeout: WAIT }), (e) => e.code === ErrorCode.NoResponders);
  assert.ok(Date.now() - start < WAIT / 2);
  await nc.close();
});

test("headers", async () => {
  const nc = await open();
  const sub = nc.subscribe("with.headers");
  await nc.flush();
  const h = headers();
  h.append("Trace-Id", "7f3a");
  h.append("Tag", "a");
  h.append("Tag", "b");
  nc.publish("with.headers", enc.encode("payload"), { headers: h });
  const [m] = await take(sub, 1);
  assert.equal(dec.decode(m.data), "payload");
  assert.equal(m.headers.get("Trace-Id"), "7f3a");
  assert.deepEqual(m.headers.values("Tag"), ["a", "b"]);
  await nc.close();
});

test("auto-unsubscribe", async () => {
  const nc = await open();
  const sub = nc.subscribe("limited", { max: 3 });
  for (let i = 0; i < 5; i++) nc.publish("limited", enc.encode("x"));
  await nc.flush();
  await take(sub, 3);
  await nc.flush();
  assert.equal(sub.getReceived(), 3);
  await nc.close();
});

test("auth", async () => {
  const u = url("RINGBROKER_NATS_AUTH_URL");
  for (const options of [{}, { token: "wrong" }, { user: "alice", pass: "nope" }]) {
    await assert.rejects(
      connect({ servers: u, reconnect: false, ...options }),
      (e) => e.code === ErrorCode.AuthorizationViolation,
      JSON.stringify(options),
    );
  }
  const token = await connect({ servers: u, token: "s3cret" });
  const user = await connect({ servers: u, user: "alice", pass: "pw" });
  const sub = token.subscribe("secured");
  await token.flush();
  user.publish("secured", enc.encode("hi"));
  const [m] = await take(sub, 1);
  assert.equal(dec.decode(m.data), "hi");
  await token.close();
  await user.close();
});
