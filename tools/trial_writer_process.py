"""A trial, not a part of the product: a journal writer in a separate process, so that the
host's threads share no GIL with the code that writes the log (see BENCHMARKS.md, "8
threads": the in-process writer is bound by thread hand-offs under the GIL).

What it measures
----------------
The host's threads send each call as one msgspec-msgpack frame ``[method, args, kwargs]``
over their own connection (one Unix stream socket per thread, all to one listening socket)
to a child process that owns a real ``Journal`` (durability ``always``, or as
``--durability`` says). The child waits for a request with ``selectors``, then reads
every request available (all readable connections, again until none is ready, at most
256 calls), hands them to the journal's own combiner as one ``Ticket`` of ``Call``s (as
``journal/aio.py`` does: one hold of the lock, one ``os.write``, one fsync), waits for
the fsync and replies to each caller with its result (a ``Receipt`` as a list) or its
exception (class name and message). ``append_message``'s stateless checks run in the
child before the batch, as in ``aio``. With ``--syncer`` a second thread of the child
waits for each batch's fsync and answers its callers, while the first reads and writes
the next batch.

The workload is ``tools/bench_append.py``'s ``durable_threads``: the workload's messages
with an event_id each, 8 sessions; 8 threads (one session each) vs 1 thread (round robin
over the 8 sessions). Four sides run on the same messages, alternated within each round in
four slices (order rotated per slice), each side on a fresh log, so all meet the same disk:

  proc8   8 threads through the writer process
  proc1   1 thread through the writer process
  inproc8 8 threads on today's in-process ``Journal`` (as ``_threaded``)
  inproc1 1 thread on today's in-process ``Journal``

and it prints three ratios: (1) proc8/proc1 (the target's ratio for this design, >= 2.5),
(2) proc1/inproc1 (what a lone caller pays for the hop), (3) inproc8/inproc1 (today's).
Timed: the appends alone (the child's start, the sessions, the close are outside).
Every log is checked complete afterwards: ``Journal.open(path).last_pos`` equals messages
+ sessions + 1 model registration. CPU per message is getrusage of the host (RUSAGE_SELF,
all its threads) and of the child (its own RUSAGE_SELF, asked before and after the timed
part), with voluntary / involuntary context switches; the child also counts its batches.

Run:

  python tools/trial_writer_process.py --messages 4000 --rounds 4

``--messages N``: messages per side per round (a multiple of 32); ``--rounds K``.
Logs go to a fresh temporary directory (removed at the end).
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime
from typing import Any

import msgspec

_HEAD = struct.Struct("<I")
_MAX_TICKET = 256
WRITERS = 8
_ALLOWED = {"register_model", "create_session", "append_message"}


def _usage() -> list[float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return [r.ru_utime, r.ru_stime, float(r.ru_nvcsw), float(r.ru_nivcsw)]


# -- the child: owns the Journal -----------------------------------------------------------
def serve(listen_fd: int, log_path: str, mode: str) -> None:
    """The child: ``mode`` is the durability, with ``:syncer`` for a second thread that
    waits for each batch's fsync and answers its callers while the next batch is read
    and written."""
    import queue

    from journal import Journal
    from journal.commit import Call, Ticket
    from journal.errors import DurabilityError, JournalClosed
    from journal.message_args import MessageArgs

    enc = msgspec.msgpack.Encoder()
    dec = msgspec.msgpack.Decoder()
    durability, _, syncer = mode.partition(":")
    journal = Journal.open(log_path, durability)  # type: ignore[arg-type]
    listener = socket.socket(fileno=listen_fd)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    bufs: dict[socket.socket, bytearray] = {}
    batches = calls_run = 0
    closing: socket.socket | None = None

    def reply(conn: socket.socket, payload: Any) -> None:
        body = enc.encode(payload)
        conn.sendall(_HEAD.pack(len(body)) + body)

    def fail(exc: BaseException) -> list[Any]:
        return [1, type(exc).__name__, str(exc)]

    def finish(token: int, batch: list[tuple[socket.socket, Call]]) -> None:
        """Wait for the batch's fsync, then answer each of its callers."""
        if token:
            try:
                journal._log.wait_durable(token)  # one fsync
            except (DurabilityError, JournalClosed) as exc:
                for _, call in batch:
                    if call.error is None:
                        call.error, call.result = exc, None
        for conn, call in batch:
            reply(conn, fail(call.error) if call.error is not None else [0, call.result])

    written: queue.Queue[tuple[int, list[tuple[socket.socket, Call]]] | None] = queue.Queue()

    def syncing() -> None:
        while (item := written.get()) is not None:
            finish(*item)

    syncing_thread = threading.Thread(target=syncing) if syncer else None
    if syncing_thread is not None:
        syncing_thread.start()

    def read(ready: list[tuple[selectors.SelectorKey, int]], reqs: list[Any]) -> None:
        for key, _ in ready:
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if sock is listener:
                try:
                    while True:
                        conn, _ = listener.accept()
                        conn.setblocking(True)  # replies are sent blocking; reads use DONTWAIT
                        bufs[conn] = bytearray()
                        sel.register(conn, selectors.EVENT_READ, None)
                except BlockingIOError:
                    pass
                continue
            buf = bufs[sock]
            eof = False
            while True:
                try:
                    chunk = sock.recv(1 << 16, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if not chunk:
                    eof = True
                    break
                buf += chunk
            while len(buf) >= 4:
                (n,) = _HEAD.unpack_from(buf)
                if len(buf) < 4 + n:
                    break
                reqs.append((sock, dec.decode(bytes(buf[4 : 4 + n]))))
                del buf[: 4 + n]
            if eof:
                sel.unregister(sock)
                del bufs[sock]
                sock.close()

    while closing is None:
        reqs: list[Any] = []
        read(sel.select(None), reqs)
        while len(reqs) < _MAX_TICKET:  # everything available before the batch
            more = sel.select(0)
            if not more:
                break
            read(more, reqs)
        batch: list[tuple[socket.socket, Call]] = []
        for conn, (method, args, kwargs) in reqs:
            if method == "__usage__":
                reply(conn, [0, [*_usage(), batches, calls_run]])
                continue
            if method == "__close__":
                closing = conn
                continue
            if method not in _ALLOWED:
                reply(conn, [1, "AttributeError", f"no method {method!r}"])
                continue
            if method == "append_message":
                try:
                    checked = MessageArgs(*args, **kwargs).checked()
                except Exception as exc:
                    reply(conn, fail(exc))
                    continue
                batch.append((conn, Call(journal._append_checked, (checked,), {})))
            else:
                batch.append((conn, Call(getattr(journal, method), tuple(args), kwargs)))
        if not batch:
            continue
        ticket = Ticket([c for _, c in batch])
        journal._combiner.submit(ticket)  # one hold of the lock, one write
        batches += 1
        calls_run += len(batch)
        if syncing_thread is not None:
            written.put((ticket.token, batch))
        else:
            finish(ticket.token, batch)
    if syncing_thread is not None:
        written.put(None)
        syncing_thread.join()
    journal.close()
    reply(closing, [0, [*_usage(), batches, calls_run]])


# -- the host's side ---------------------------------------------------------------------
class RemoteError(Exception):
    pass


class ProcJournal:
    """A proxy: every call goes to the writer process over this thread's connection."""

    def __init__(self, log_path: str, sock_dir: str, mode: str) -> None:
        self._addr = os.path.join(sock_dir, "w.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self._addr)
        listener.listen(64)
        self.child = subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                str(listener.fileno()),
                log_path,
                mode,
            ],
            pass_fds=[listener.fileno()],
        )
        listener.close()  # the child has its own copy; clients queue in the backlog
        self._local = threading.local()
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder()

    def _conn(self) -> tuple[socket.socket, bytearray]:
        c = getattr(self._local, "c", None)
        if c is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self._addr)
            c = self._local.c = (s, bytearray())
        return c

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        sock, buf = self._conn()
        body = self._enc.encode([method, args, kwargs])
        sock.sendall(_HEAD.pack(len(body)) + body)
        while True:
            if len(buf) >= 4:
                (n,) = _HEAD.unpack_from(buf)
                if len(buf) >= 4 + n:
                    out = self._dec.decode(bytes(buf[4 : 4 + n]))
                    del buf[: 4 + n]
                    break
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise RemoteError("the writer process closed the connection")
            buf += chunk
        if out[0]:
            raise RemoteError(f"{out[1]}: {out[2]}")
        return out[1]

    def append_message(self, session_id: str, role: str, content: str, **kw: Any) -> Any:
        return self._call("append_message", (session_id, role, content), kw)

    def create_session(self, *args: Any, **kw: Any) -> Any:
        return self._call("create_session", args, kw)

    def usage(self) -> list[float]:
        u: list[float] = self._call("__usage__", (), {})
        return u

    def close(self) -> tuple[list[float], int]:
        u: list[float] = self._call("__close__", (), {})
        sock, _ = self._conn()
        sock.close()
        _, status, _ = os.wait4(self.child.pid, 0)
        self.child.returncode = status
        return u, status


def run_side(side: str, msgs: list[dict[str, Any]], workdir: str, mode: str) -> dict[str, float]:
    """One side's run; ``mode`` is the child's (``serve``), its durability for the host."""
    from bench_append import drive_threads

    from journal import Journal

    threads = 8 if side.endswith("8") else 1
    d = tempfile.mkdtemp(dir=workdir)
    path = os.path.join(d, "log.jsonl")
    parts = [msgs[i::WRITERS] for i in range(WRITERS)]
    child_u0 = child_u1 = [0.0] * 6
    if side.startswith("proc"):
        j: Any = ProcJournal(path, d, mode)
        sids = [
            j.create_session("openai/gpt-4o", session_id=f"bench-{i}", idle_timeout_seconds=None)
            for i in range(WRITERS)
        ]
        child_u0 = j.usage()
        h0 = _usage()
        elapsed = drive_threads(j, sids, parts, threads, j._conn)  # connected before the clock
        h1 = _usage()
        child_u1 = j.usage()
        _, status = j.close()
        if status != 0:
            raise AssertionError(f"writer process ended with status {status}")
    else:
        with Journal.open(path, mode.partition(":")[0]) as j:  # type: ignore[arg-type]
            sids = [
                j.create_session(
                    "openai/gpt-4o", session_id=f"bench-{i}", idle_timeout_seconds=None
                )
                for i in range(WRITERS)
            ]
            h0 = _usage()
            elapsed = drive_threads(j, sids, parts, threads)
            h1 = _usage()
    with Journal.open(path, "none") as check:
        if check.last_pos != len(msgs) + WRITERS + 1:
            raise AssertionError(f"{side}: log incomplete, last_pos {check.last_pos}")
    shutil.rmtree(d)
    return {
        "t": elapsed,
        "n": len(msgs),
        "host_cpu": h1[0] - h0[0] + h1[1] - h0[1],
        "host_vcs": h1[2] - h0[2],
        "host_ivcs": h1[3] - h0[3],
        "child_cpu": child_u1[0] - child_u0[0] + child_u1[1] - child_u0[1],
        "child_vcs": child_u1[2] - child_u0[2],
        "child_ivcs": child_u1[3] - child_u0[3],
        "batches": child_u1[4] - child_u0[4],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000, help="messages per side per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--durability",
        default="always",
        choices=["always", "none"],
        help="none: no fsync at all, what the threads' hand-offs alone allow",
    )
    ap.add_argument(
        "--syncer",
        action="store_true",
        help="the writer process fsyncs and answers on a second thread",
    )
    ap.add_argument("--child", nargs=3, metavar=("FD", "LOG", "MODE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        serve(int(a.child[0]), a.child[1], a.child[2])
        return
    from bench_append import _messages  # here: the writer process needs none of it

    workdir = tempfile.mkdtemp(prefix="trial-writer-process-")
    msgs = _messages(a.messages)
    q = max(WRITERS, len(msgs) // 4 // WRITERS * WRITERS)
    pieces = [msgs[k : k + q] for k in range(0, len(msgs) - q + 1, q)]
    sides = ["proc8", "proc1", "inproc1", "inproc8"]
    tot = {
        s: dict.fromkeys(
            [
                "t",
                "n",
                "host_cpu",
                "host_vcs",
                "host_ivcs",
                "child_cpu",
                "child_vcs",
                "child_ivcs",
                "batches",
            ],
            0.0,
        )
        for s in sides
    }
    started = datetime.now(UTC)
    print(
        f"start {started:%Y-%m-%dT%H:%M:%SZ}  messages/side/round {len(pieces) * q}  "
        f"rounds {a.rounds}  slices/round {len(pieces)}  python {sys.version.split()[0]}"
    )
    for r in range(a.rounds):
        per = {s: dict.fromkeys(["t", "n"], 0.0) for s in sides}
        for k, piece in enumerate(pieces):
            k0 = (r * len(pieces) + k) % len(sides)
            for side in sides[k0:] + sides[:k0]:  # rotate the order slice by slice
                mode = f"{a.durability}:syncer" if a.syncer else a.durability
                m = run_side(side, piece, workdir, mode)
                for key, v in m.items():
                    tot[side][key] += v
                per[side]["t"] += m["t"]
                per[side]["n"] += m["n"]
        rate = {s: per[s]["n"] / per[s]["t"] for s in sides}
        print(
            f"round {r + 1}: "
            + "  ".join(f"{s} {rate[s]:7,.0f}/s" for s in sides)
            + f"  | (1) {rate['proc8'] / rate['proc1']:.2f}"
            f"  (2) {rate['proc1'] / rate['inproc1']:.2f}"
            f"  (3) {rate['inproc8'] / rate['inproc1']:.2f}"
        )
    rate = {s: tot[s]["n"] / tot[s]["t"] for s in sides}
    took = (datetime.now(UTC) - started).total_seconds()
    print(f"end   {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}  ({took:.0f} s)")
    print(
        "side      msg/s   host cpu us/msg  child cpu us/msg  host vcsw/ivcsw per msg  "
        "child vcsw/ivcsw per msg  msgs/batch"
    )
    for s in sides:
        t = tot[s]
        n = t["n"]
        mb = f"{n / t['batches']:.2f}" if t["batches"] else "-"
        host_cs = f"{t['host_vcs'] / n:5.2f} / {t['host_ivcs'] / n:5.2f}"
        child_cs = f"{t['child_vcs'] / n:5.2f} / {t['child_ivcs'] / n:5.2f}"
        print(
            f"{s:8} {rate[s]:7,.0f}   {t['host_cpu'] / n * 1e6:8.1f}        "
            f"{t['child_cpu'] / n * 1e6:8.1f}          {host_cs}            {child_cs}         {mb}"
        )
    print(
        f"overall: (1) proc8/proc1 {rate['proc8'] / rate['proc1']:.2f}  "
        f"(2) proc1/inproc1 {rate['proc1'] / rate['inproc1']:.2f}  "
        f"(3) inproc8/inproc1 {rate['inproc8'] / rate['inproc1']:.2f}  "
        "(all logs complete)"
    )
    shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
