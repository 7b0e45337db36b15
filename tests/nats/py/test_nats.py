"""The official Python client (nats-py, from PyPI) against `ringbrokerd --nats`.

scripts/test-nats starts the daemons and sets RINGBROKER_NATS_URL (no auth) and
RINGBROKER_NATS_AUTH_URL (token "s3cret", user alice/pw). Proves pub/sub with
wildcards, queue groups, request-reply with timeout, headers, no-responders,
auto-unsubscribe and auth. Exits non-zero on the first failure.
"""

import asyncio
import os
import sys
import time

import nats
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout

WAIT = 5.0


def url(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{name} is not set: run through scripts/test-nats")
    return value


async def connect(**options):
    return await nats.connect(url("RINGBROKER_NATS_URL"), **options)


async def settle(nc):
    """Makes the subscriptions made so far active everywhere. nats-py's flush writes
    its PING ahead of the SUBs still in its buffer, so the first PONG can come before
    they are read; the second PING follows them, and ringbrokerd answers it only once
    they are routed by every shard (nats-server has the same gap, only narrower)."""
    await nc.flush()
    await nc.flush()


async def pub_sub_with_wildcards():
    nc = await connect()
    users = await nc.subscribe("user.>")
    shipped = await nc.subscribe("orders.*.shipped")
    await settle(nc)
    pub = await connect()
    for subject in ["user.1", "user.2.login", "orders.eu.shipped", "orders.eu.x.shipped", "user"]:
        await pub.publish(subject, subject.encode())
    await pub.flush()
    got = [(await users.next_msg(WAIT)).subject for _ in range(2)]
    assert got == ["user.1", "user.2.login"], got
    m = await shipped.next_msg(WAIT)
    assert (m.subject, m.data) == ("orders.eu.shipped", b"orders.eu.shipped"), m
    for sub in (users, shipped):
        try:
            extra = await sub.next_msg(0.2)
            raise AssertionError(f"unexpected {extra.subject}")
        except NatsTimeout:
            pass
    await pub.close()
    await nc.close()


async def queue_group_shares_messages():
    total = 200
    counts = [0, 0]
    done = asyncio.Event()
    members = []
    for i in range(2):
        nc = await connect()

        async def handler(msg, member=i):
            counts[member] += 1
            if sum(counts) == total:
                done.set()

        await nc.subscribe("jobs.new", queue="workers", cb=handler)
        await settle(nc)
        members.append(nc)
    pub = await connect()
    for i in range(total):
        await pub.publish("jobs.new", str(i).encode())
    await pub.flush()
    await asyncio.wait_for(done.wait(), WAIT)
    await asyncio.sleep(0.1)
    assert sum(counts) == total and min(counts) > 0, counts
    for nc in members + [pub]:
        await nc.close()


async def request_reply_and_timeout():
    responder = await connect()

    async def echo(msg):
        await msg.respond(b"echo: " + msg.data)

    await responder.subscribe("svc.echo", cb=echo)
    await responder.subscribe("svc.silent")
    await settle(responder)
    nc = await connect()
    for i in range(20):
        reply = await nc.request("svc.echo", str(i).encode(), timeout=WAIT)
        assert reply.data == f"echo: {i}".encode(), reply.data
    start = time.monotonic()
    try:
        await nc.request("svc.silent", b"x", timeout=0.3)
        raise AssertionError("a silent service answered")
    except NatsTimeout:
        pass
    assert time.monotonic() - start >= 0.25
    await nc.close()
    await responder.close()


async def no_responders():
    nc = await connect()
    start = time.monotonic()
    try:
        await nc.request("nobody.home", b"?", timeout=WAIT)
        raise AssertionError("nobody answered, yet a reply came")
    except NoRespondersError:
        pass
    assert time.monotonic() - start < WAIT / 2
    await nc.close()


async def headers():
    nc = await connect()
    sub = await nc.subscribe("with.headers")
    await settle(nc)
    await nc.publish("with.headers", b"payload", headers={"Trace-Id": "7f3a", "Tag": "a"})
    m = await sub.next_msg(WAIT)
    assert m.data == b"payload", m.data
    assert m.headers == {"Trace-Id": "7f3a", "Tag": "a"}, m.headers
    await nc.close()


async def auto_unsubscribe():
    nc = await connect()
    sub = await nc.subscribe("limited")
    await sub.unsubscribe(limit=3)
    for _ in range(5):
        await nc.publish("limited", b"x")
    await nc.flush()
    for _ in range(3):
        await sub.next_msg(WAIT)
    try:
        await sub.next_msg(0.2)
        raise AssertionError("a fourth message arrived")
    except (NatsTimeout, nats.errors.Error):
        pass
    await nc.close()


async def auth():
    u = url("RINGBROKER_NATS_AUTH_URL")
    errors = []

    async def error_cb(e):
        errors.append(str(e))

    for options in ({}, {"token": "wrong"}, {"user": "alice", "password": "nope"}):
        try:
            nc = await nats.connect(
                u, allow_reconnect=False, max_reconnect_attempts=0,
                connect_timeout=2, error_cb=error_cb, **options)
            await nc.close()
            raise AssertionError(f"connected with {options}")
        except AssertionError:
            raise
        except Exception:  # nats-py reports the -ERR in its own ways
            pass
    assert any("authorization violation" in e.lower() for e in errors), errors
    token = await nats.connect(u, token="s3cret")
    user = await nats.connect(u, user="alice", password="pw")
    sub = await token.subscribe("secured")
    await settle(token)
    await user.publish("secured", b"hi")
    assert (await sub.next_msg(WAIT)).data == b"hi"
    await token.close()
    await user.close()


async def main():
    scenarios = [pub_sub_with_wildcards, queue_group_shares_messages,
                 request_reply_and_timeout, no_responders, headers,
                 auto_unsubscribe, auth]
    for scenario in scenarios:
        await asyncio.wait_for(scenario(), 30)
        print(f"ok   {scenario.__name__}")
    print(f"nats-py: {len(scenarios)} scenarios passed")


if __name__ == "__main__":
    asyncio.run(main())
