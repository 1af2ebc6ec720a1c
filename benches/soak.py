#!/usr/bin/env python3
"""Soak run (issue #10): an acknowledging `http_server` behind a slow,
sometimes failing `http` sink, driven by concurrent clients with a mix of
good, huge, malformed and deeply nested bodies. Not run in CI; start it
with benches/soak.sh (README "Soak run").

    soak.py run --work DIR --bin FLOWGATE     # the whole run (what soak.sh calls)
    soak.py serve --work DIR                  # the flaky service alone

Standard library only. Everything it writes goes under --work:
  service.port, service.ids    the service's port and every id it recorded
                               (one per line, each time it answered 200)
  soak.yaml, flowgate.log      the pipeline and the daemon's log
  requests.ndjson              one line per request: client, kind, status,
                               the ids it carried (a range) and the ids
                               that must never be written
  rss.tsv, metrics.*.txt       RSS samples; /metrics mid-run and at the end
  summary.json                 the figures printed at the end
  pids                         child pids, for soak.sh's cleanup
"""

import argparse
import http.client
import http.server
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

MAX_BODY = 1 << 20  # the source's max_body_bytes
MAX_LINE = 64 << 10  # the source's max_line_bytes
SINK_TIMEOUT = 2.0  # the sink's request_timeout, seconds


def env_float(name, default):
    return float(os.environ.get(name, default))


# --------------------------------------------------------------------------
# The flaky service: the http sink's NDJSON POSTs.


class Service(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, work, fail_rate, hang_rate, hang_for):
        super().__init__(("127.0.0.1", 0), ServiceHandler)
        self.fail_rate, self.hang_rate, self.hang_for = fail_rate, hang_rate, hang_for
        self.lock = threading.Lock()
        self.ids_file = open(os.path.join(work, "service.ids"), "w")
        self.answers = {}  # what the service answered: "200", "503", "hung"
        self.recorded = 0  # ids recorded (with repeats)
        self.unique = set()
        self.not_stamped = 0  # events without the map's `via` field
        self.without_id = 0

    def record(self, ids):
        with self.lock:
            self.recorded += len(ids)
            self.unique.update(ids)
            if ids:
                self.ids_file.write("\n".join(map(str, ids)) + "\n")
                self.ids_file.flush()

    def count(self, what):
        with self.lock:
            self.answers[what] = self.answers.get(what, 0) + 1


class ServiceHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the sink's client expects

    def log_message(self, *args):
        pass

    def answer(self, status, text):
        body = text.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            # The sink gave up on this request (request_timeout).
            self.close_connection = True

    def do_GET(self):
        s = self.server
        with s.lock:
            stats = {
                "answers": dict(s.answers),
                "recorded": s.recorded,
                "unique": len(s.unique),
                "not_stamped": s.not_stamped,
                "without_id": s.without_id,
            }
        self.answer(200, json.dumps(stats))

    def do_POST(self):
        s = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        time.sleep(random.uniform(0, 0.050))
        roll = random.random()
        if roll < s.fail_rate:
            s.count("503")
            self.answer(503, "flaky: try again\n")
            return
        hung = roll < s.fail_rate + s.hang_rate
        if hung:
            # Past the sink's request_timeout: the sink has given up and
            # retries, but the events were processed (recorded below), as
            # a slow real service would: these become duplicates.
            time.sleep(s.hang_for)
        ids = []
        not_stamped = without_id = 0
        for line in body.split(b"\n"):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {}
            if event.get("via") != "flowgate":
                not_stamped += 1
            if "id" in event:
                ids.append(event["id"])
            else:
                without_id += 1
        s.record(ids)
        with s.lock:
            s.not_stamped += not_stamped
            s.without_id += without_id
        s.count("hung" if hung else "200")
        self.answer(200, "ok\n")


def serve(args):
    service = Service(
        args.work,
        env_float("FAIL_RATE", 0.10),
        env_float("HANG_RATE", 0.005),
        SINK_TIMEOUT + 1.0,
    )
    port_file = os.path.join(args.work, "service.port")
    with open(port_file + ".tmp", "w") as f:
        f.write(str(service.server_address[1]))
    os.rename(port_file + ".tmp", port_file)

    def stop(*_):
        threading.Thread(target=service.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    service.serve_forever(poll_interval=0.2)
    with service.lock:
        service.ids_file.close()


# --------------------------------------------------------------------------
# The clients: what they send and what they expect.

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 "


class Ids:
    """A client's ids: client * 10^9 + a sequence number, so every request
    carries a contiguous range and ids never collide across clients."""

    def __init__(self, client):
        self.next = client * 1_000_000_000

    def take(self, n):
        first = self.next
        self.next += n
        return first


def event(i, rnd, pad=0):
    e = {"id": i, "msg": "".join(rnd.choices(ALPHABET, k=rnd.randint(8, 64))), "n": rnd.randint(0, 10**6)}
    if pad:
        e["pad"] = "x" * pad
    return e


def nested(depth):
    """A value that, as a field of an event, makes the event `depth`
    levels deep (the event object is the first)."""
    return "[" * (depth - 1) + "1" + "]" * (depth - 1)


def dumps(e):
    return json.dumps(e, separators=(",", ":"))


# Each kind: weight, and a maker returning (body, first id, count, forbidden
# ids, the answers it may get). `count` ids from `first` are the ones the
# request carries for delivery; `forbidden` ids must never reach the service
# (refused bodies, over-long lines).
def good_object(ids, rnd):
    first = ids.take(1)
    return dumps(event(first, rnd)), first, 1, [], GOOD


def good_array(ids, rnd):
    n = rnd.randint(1, 200)
    first = ids.take(n)
    return "[" + ",".join(dumps(event(first + k, rnd)) for k in range(n)) + "]", first, n, [], GOOD


def good_ndjson(ids, rnd):
    n = rnd.randint(1, 200)
    first = ids.take(n)
    lines = [dumps(event(first + k, rnd)) for k in range(n)]
    return "\n".join(lines) + rnd.choice(["\n", "", "\r\n"]), first, n, [], GOOD


def huge_ok(ids, rnd):
    # NDJSON or an array of ~4 KiB events, padded with whitespace to within
    # 1 KiB of max_body_bytes: accepted.
    parts, size = [], 0
    first = ids.next
    while size + 4096 + 256 < MAX_BODY - 2048:
        parts.append(dumps(event(first + len(parts), rnd, pad=4096)))
        size += len(parts[-1]) + 1
    n = len(parts)
    ids.take(n)
    as_array = rnd.random() < 0.5
    body = ("[" + ",".join(parts) + "]") if as_array else "\n".join(parts) + "\n"
    filler = MAX_BODY - len(body) - rnd.randint(0, 1024)
    body = body + " " * filler if as_array else body + "\n" * filler
    assert len(body) <= MAX_BODY
    return body, first, n, [], GOOD


def huge_over(ids, rnd):
    # Just over max_body_bytes, or far over: 413, nothing accepted.
    per = 4096
    size = MAX_BODY + rnd.choice([1, 100, 4096, MAX_BODY])
    n = size // (per + 64) + 1
    first = ids.take(n)
    body = "\n".join(dumps(event(first + k, rnd, pad=per)) for k in range(n)) + "\n"
    body = body + "\n" * max(0, size - len(body))
    return body, first, 0, list(range(first, first + n)), ("413",)


def malformed(ids, rnd):
    n = rnd.randint(1, 20)
    first = ids.take(n)
    lines = [dumps(event(first + k, rnd)) for k in range(n)]
    how = rnd.randrange(5)
    if how == 0:  # a truncated object
        body = lines[0][: rnd.randint(1, len(lines[0]) - 1)]
    elif how == 1:  # NDJSON with one broken line
        k = rnd.randrange(n)
        lines[k] = lines[k][:-1] + ",}"
        body = "\n".join(lines)
    elif how == 2:  # an array with a non-object element
        body = "[" + ",".join(lines + ["42"]) + "]"
    elif how == 3:  # not UTF-8
        body = "\n".join(lines).encode() + b'\n{"msg":"\xff\xfe"}\n'
    else:  # a bare JSON value
        body = rnd.choice(["42", '"text"', "null", "[1,2]"])
    return body, first, 0, list(range(first, first + n)), ("400",)


def nested_ok(ids, rnd):
    # Depth 100 (the limit is 128): accepted.
    first = ids.take(1)
    e = event(first, rnd)
    body = dumps(e)[:-1] + ',"deep":' + nested(100) + "}"
    return body, first, 1, [], GOOD


def nested_bad(ids, rnd):
    # Depth 200 alone, or among good NDJSON lines: 400, nothing accepted.
    n = rnd.randint(1, 20)
    first = ids.take(n + 1)
    deep = dumps(event(first + n, rnd))[:-1] + ',"deep":' + nested(200) + "}"
    lines = [dumps(event(first + k, rnd)) for k in range(n)]
    if rnd.random() < 0.5:
        lines = []
    lines.insert(rnd.randint(0, len(lines)), deep)
    return "\n".join(lines), first, 0, list(range(first, first + n + 1)), ("400",)


def long_line(ids, rnd):
    # NDJSON with one line over max_line_bytes: that line is dropped (a
    # decode error of the source), the other lines are accepted.
    n = rnd.randint(1, 50)
    first = ids.take(n + 1)
    lines = [dumps(event(first + k, rnd)) for k in range(n)]
    long = dumps(event(first + n, rnd, pad=MAX_LINE + rnd.choice([1, 1000, 100_000])))
    # The first line must stay short: a one-line body is one JSON document.
    lines.insert(rnd.randint(1, n), long)
    return "\n".join(lines) + "\n", first, n, [first + n], GOOD


def empty(ids, rnd):
    return rnd.choice(["", "\n", "  \n\n"]), 0, 0, [], GOOD


# 200, or the pipeline's pushback (429) or a sink that finally failed (503).
GOOD = ("200", "429", "503")

KINDS = {
    "object": (12, good_object),
    "array": (25, good_array),
    "ndjson": (30, good_ndjson),
    "huge_ok": (2, huge_ok),
    "huge_over": (2, huge_over),
    "malformed": (9, malformed),
    "nested_100": (6, nested_ok),
    "nested_200": (6, nested_bad),
    "long_line": (6, long_line),
    "empty": (2, empty),
}


class Tally:
    def __init__(self, log_path):
        self.lock = threading.Lock()
        self.log = open(log_path, "w")
        self.by_status = {}
        self.by_kind = {}
        self.requests = 0
        self.events_200 = 0
        self.unexpected = []  # (kind, status, detail)

    def add(self, client, kind, status, first, count, forbidden, allowed, detail=""):
        line = {"client": client, "kind": kind, "status": status, "ids": [first, count], "forbidden": forbidden}
        if detail:
            line["detail"] = detail[:200]
        with self.lock:
            self.requests += 1
            self.by_status[status] = self.by_status.get(status, 0) + 1
            k = self.by_kind.setdefault(kind, {})
            k[status] = k.get(status, 0) + 1
            if status == "200":
                self.events_200 += count
            if status not in allowed:
                self.unexpected.append((kind, status, detail[:200]))
            self.log.write(dumps(line) + "\n")


def client_loop(n, port, stop, tally, seed):
    rnd = random.Random(seed * 1000 + n)
    ids = Ids(n)
    names = list(KINDS)
    weights = [KINDS[k][0] for k in names]
    conn = None
    while not stop.is_set():
        kind = rnd.choices(names, weights)[0]
        body, first, count, forbidden, allowed = KINDS[kind][1](ids, rnd)
        if isinstance(body, str):
            body = body.encode()
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        status, detail = None, ""
        try:
            conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            detail = resp.read().decode(errors="replace")
            status = str(resp.status)
            # After a 413 flowgate (hyper) closes the connection when much
            # of the body was left unread, but its answer does not say
            # `connection: close`; a client reusing it gets a broken pipe.
            if resp.will_close or resp.status == 413:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            # Broken connection or no answer: the ids are not counted as
            # acknowledged (nor forbidden: they may have been accepted).
            conn.close()
            conn = None
            status, detail = "conn_error", f"{type(e).__name__}: {e}"
            if kind == "huge_over" and isinstance(e, (BrokenPipeError, ConnectionResetError)):
                # The server may answer 413 and close before it read the
                # body; what the client sees then is a reset.
                status = "reset_413"
        if kind == "huge_over":
            allowed = allowed + ("reset_413",)
        tally.add(n, kind, status, first, count, forbidden, allowed, detail if status not in ("200",) else "")


# --------------------------------------------------------------------------
# The run.


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_for(cond, what, deadline=30):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"soak: timed out waiting for {what}")


def metric_sum(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


PIPELINE = """\
# Written by benches/soak.py.
name: soak
sources:
  intake:
    type: http_server
    address: 127.0.0.1:{intake_port}
    acknowledgements: true
    max_body_bytes: {max_body}
    max_line_bytes: {max_line}
transforms:
  stamp:
    type: map
    inputs: [intake]
    program: '.via = "flowgate"'
sinks:
  service:
    type: http
    inputs: [stamp]
    url: http://127.0.0.1:{service_port}/ingest
    request_timeout: {sink_timeout}s
    batch: {{max_events: 500, timeout: 200ms}}
    workers: 4
    retry: {{attempts: 10, initial_backoff: 50ms, max_backoff: 1s}}
"""


def mib(kib):
    return f"{kib / 1024:.1f} MiB" if kib is not None else "n/a"


def run(args):
    work, duration = args.work, float(os.environ.get("DURATION", 600))
    clients = int(os.environ.get("CLIENTS", 16))
    seed = int(os.environ.get("SEED", int(time.time())))
    interval = float(os.environ.get("SAMPLE_EVERY", 10))
    children = []

    def remember(proc):
        children.append(proc)
        with open(os.path.join(work, "pids"), "a") as f:
            f.write(f"{proc.pid}\n")

    def on_signal(signum, _frame):
        raise SystemExit(f"soak: interrupted by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        # The service, which picks its own port.
        service = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", "--work", work],
            stdout=open(os.path.join(work, "service.log"), "w"),
            stderr=subprocess.STDOUT,
        )
        remember(service)
        port_file = os.path.join(work, "service.port")
        wait_for(lambda: os.path.exists(port_file), "the service's port")
        service_port = int(open(port_file).read())

        intake_port, metrics_port = free_port(), free_port()
        pipeline = os.path.join(work, "soak.yaml")
        with open(pipeline, "w") as f:
            f.write(
                PIPELINE.format(
                    intake_port=intake_port,
                    max_body=MAX_BODY,
                    max_line=MAX_LINE,
                    service_port=service_port,
                    sink_timeout=int(SINK_TIMEOUT),
                )
            )
        cmd = [
            args.bin, "run", pipeline,
            "--metrics-address", f"127.0.0.1:{metrics_port}",
            "--data-dir", os.path.join(work, "state"),
        ]
        daemon = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "flowgate.log"), "w"))
        remember(daemon)
        metrics = f"http://127.0.0.1:{metrics_port}"
        wait_for(lambda: daemon.poll() is None and get(metrics + "/ready") is not None, "flowgate /ready")
        print(f"soak: flowgate pid {daemon.pid}, intake :{intake_port}, metrics :{metrics_port}, "
              f"service :{service_port}; {clients} clients for {duration:.0f}s (seed {seed}); work dir {work}",
              flush=True)

        tally = Tally(os.path.join(work, "requests.ndjson"))
        stop = threading.Event()
        threads = [
            threading.Thread(target=client_loop, args=(n, intake_port, stop, tally, seed), daemon=True)
            for n in range(clients)
        ]
        start = time.monotonic()
        for t in threads:
            t.start()

        samples = []  # (seconds, rss KiB)
        rss_log = open(os.path.join(work, "rss.tsv"), "w")
        rss_log.write("seconds\trss_kib\trequests\tevents_200\n")
        next_at = 0.0
        while True:
            now = time.monotonic() - start
            if now >= next_at:
                kib = rss_kib(daemon.pid)
                samples.append((round(now, 1), kib))
                rss_log.write(f"{now:.1f}\t{kib}\t{tally.requests}\t{tally.events_200}\n")
                rss_log.flush()
                try:
                    stats = json.loads(get(f"http://127.0.0.1:{service_port}/stats"))
                except OSError:
                    stats = {"unique": "?"}
                print(f"  t={now:5.0f}s  rss {mib(kib):>9}  requests {tally.requests:7d}  "
                      f"events answered 200 {tally.events_200:9d}  service recorded {stats['unique']}",
                      flush=True)
                if abs(now - duration / 2) < interval / 2:
                    with open(os.path.join(work, "metrics.middle.txt"), "w") as f:
                        f.write(get(metrics + "/metrics"))
                next_at += interval
            if daemon.poll() is not None:
                print(f"soak: flowgate exited during the run with {daemon.returncode}", flush=True)
                break
            if now >= duration:
                break
            time.sleep(min(0.5, max(0.0, next_at - now)))
        sent_for = time.monotonic() - start

        # Stop sending; the requests in flight get their answers.
        stop.set()
        for t in threads:
            t.join(timeout=150)
        hung_clients = sum(t.is_alive() for t in threads)
        end_rss = rss_kib(daemon.pid)
        final_metrics = ""
        if daemon.poll() is None:
            final_metrics = get(metrics + "/metrics")
            with open(os.path.join(work, "metrics.end.txt"), "w") as f:
                f.write(final_metrics)
            daemon.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            code = daemon.wait(timeout=90)
        except subprocess.TimeoutExpired:
            code = "hung"
            daemon.kill()
            daemon.wait()
        exit_seconds = time.monotonic() - t0

        # The service has had everything; stop it and read its record.
        stats = json.loads(get(f"http://127.0.0.1:{service_port}/stats"))
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)
        recorded = {}
        with open(os.path.join(work, "service.ids")) as f:
            for line in f:
                if line.strip():
                    i = int(line)
                    recorded[i] = recorded.get(i, 0) + 1
        tally.log.close()

        # Every id answered 200 recorded at least once; no refused id ever.
        missing, forbidden_seen, acked = [], [], 0
        with open(os.path.join(work, "requests.ndjson")) as f:
            for line in f:
                r = json.loads(line)
                first, count = r["ids"]
                if r["status"] == "200":
                    acked += count
                    missing.extend(i for i in range(first, first + count) if i not in recorded)
                forbidden_seen.extend(i for i in r["forbidden"] if i in recorded)
        total_recorded = sum(recorded.values())
        duplicated = sum(1 for c in recorded.values() if c > 1)

        rss = [k for _, k in samples if k is not None]
        # Start: the first sample under load (the one at 0s is the idle daemon).
        first = samples[1][1] if len(samples) > 1 else None
        mid = min(samples, key=lambda s: abs(s[0] - duration / 2))[1] if samples else None
        last = samples[-1][1] if samples else None
        figures = {
            "command": " ".join(cmd),
            "duration_s": round(sent_for, 1),
            "clients": clients,
            "seed": seed,
            "requests": tally.requests,
            "requests_by_status": dict(sorted(tally.by_status.items())),
            "requests_by_kind": tally.by_kind,
            "events_answered_200": tally.events_200,
            "events_per_s": round(tally.events_200 / sent_for, 1) if sent_for else 0,
            "service_answers": stats["answers"],
            "service_recorded_total": total_recorded,
            "service_recorded_unique": len(recorded),
            "duplicates": total_recorded - len(recorded),
            "ids_recorded_more_than_once": duplicated,
            "missing_ids": len(missing),
            "missing_sample": missing[:50],
            "refused_ids_recorded": len(forbidden_seen),
            "refused_sample": forbidden_seen[:50],
            "not_stamped": stats["not_stamped"],
            "unexpected_answers": len(tally.unexpected),
            "unexpected_sample": tally.unexpected[:20],
            "rss_kib": {"idle": samples[0][1] if samples else None, "start": first, "middle": mid, "end": last,
                        "max": max(rss) if rss else None, "after_clients_stopped": end_rss},
            "flowgate_exit": code,
            "flowgate_exit_s": round(exit_seconds, 2),
            "clients_still_waiting": hung_clients,
        }
        if final_metrics:
            m = final_metrics
            figures["metrics"] = {
                "intake_events_in": metric_sum(m, "flowgate_events_in_total", component="intake"),
                "sink_events_out": metric_sum(m, "flowgate_events_out_total", component="service"),
                "sink_retries": metric_sum(m, "flowgate_retries_total", component="service"),
                "acknowledged_delivered": metric_sum(m, "flowgate_acknowledged_events_total", outcome="delivered"),
                "acknowledged_failed": metric_sum(m, "flowgate_acknowledged_events_total", outcome="failed"),
                "intake_decode_errors": metric_sum(m, "flowgate_errors_total", component="intake", error_type="decode"),
                "sink_final_errors_http": metric_sum(m, "flowgate_errors_total", component="service", error_type="http"),
                "sink_final_errors_timeout": metric_sum(m, "flowgate_errors_total", component="service", error_type="timeout"),
            }
        with open(os.path.join(work, "summary.json"), "w") as f:
            json.dump(figures, f, indent=2)

        problems = []
        if missing:
            problems.append(f"{len(missing)} ids answered 200 were never recorded by the service "
                            f"(first: {missing[:10]})")
        if forbidden_seen:
            problems.append(f"{len(forbidden_seen)} ids of refused bodies or over-long lines reached the service "
                            f"(first: {forbidden_seen[:10]})")
        if tally.unexpected:
            problems.append(f"{len(tally.unexpected)} unexpected answers (first: {tally.unexpected[:3]})")
        if code != 0:
            problems.append(f"flowgate exited with {code} after SIGTERM")
        if hung_clients:
            problems.append(f"{hung_clients} clients still waiting for an answer 150s after the end")
        if stats["not_stamped"]:
            problems.append(f"{stats['not_stamped']} events reached the service without the map's field")
        if mid and last and last > 1.5 * mid:
            problems.append(f"RSS grew from {mib(mid)} (middle) to {mib(last)} (end), more than 50%")
        if tally.events_200 == 0:
            problems.append("no event was answered 200")

        print()
        print(f"soak: {sent_for:.0f}s, {clients} clients, seed {seed}; flowgate: {' '.join(cmd)}")
        print("requests answered, by status: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.by_status.items())))
        for kind in KINDS:
            if kind in tally.by_kind:
                print(f"  {kind:<11} " + ", ".join(f"{k} {v}" for k, v in sorted(tally.by_kind[kind].items())))
        print(f"events answered 200: {tally.events_200} ({figures['events_per_s']}/s)")
        print(f"service: answered {', '.join(f'{k} {v}' for k, v in sorted(stats['answers'].items()))}; "
              f"recorded {len(recorded)} unique ids, {total_recorded} in all "
              f"(duplicates {total_recorded - len(recorded)}, on {duplicated} ids)")
        print(f"missing ids: {len(missing)}; refused ids that reached the service: {len(forbidden_seen)}")
        if "metrics" in figures:
            print("metrics: " + ", ".join(f"{k} {v:.0f}" for k, v in figures["metrics"].items()))
        r = figures["rss_kib"]
        print(f"flowgate RSS: idle {mib(r['idle'])}; under load start {mib(r['start'])}, middle {mib(r['middle'])}, "
              f"end {mib(r['end'])}, max {mib(r['max'])} ({len(rss)} samples every {interval:.0f}s)")
        print(f"flowgate exit after SIGTERM: {code} in {exit_seconds:.1f}s")
        if problems:
            print("\nFAILED:")
            for p in problems:
                print("  - " + p)
            return 1
        print("\nOK: every event answered 200 reached the service at least once")
        return 0
    finally:
        for proc in children:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["run", "serve"])
    p.add_argument("--work", required=True)
    p.add_argument("--bin", default="target/release/flowgate")
    args = p.parse_args()
    if args.mode == "serve":
        serve(args)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
