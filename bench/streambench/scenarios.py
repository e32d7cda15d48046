"""The benchmark's scenarios, in order: floor, server load, TTFD (rounds, below saturation, sweep), sink,
idle streams and client disconnects; and the database checks of what the server stored."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from .common import HOST, cpu_seconds, mem_probe, pct, rss_kb, say, wait_quiet
from .fake import configure_fake
from .harness import Harness
from .report import summary


class Bench(Harness):
    """The scenarios on the harness's processes; `run` does them all and returns the JSON line's dict."""

    def run(self) -> dict:
        a = self.args
        t_start = time.monotonic()
        delays = [a.delay_ms]
        if a.ttfd_delay_ms is not None and a.ttfd_delay_ms != a.delay_ms:
            delays.append(a.ttfd_delay_ms)
        # Start the fake and the server while this process migrates: start-up is import-bound.
        say(f"starting the fake and the server; preparing the database in {self.tmp}")
        fake, fake_port = self.start_fake()
        server, port = self.start_server(fake_port, wait=False)
        self.setup_django()
        token = self.prepare_db()
        self.wait_port(fake_port, fake, "fake OpenAI server")
        self.wait_port(port, server, "daphne")

        say(f"floor: in-process Runner.run_streamed, delays {delays} ms")

        def floor_args(*at_delays: float) -> list[str]:
            return [
                "--fake-port", str(fake_port), "--delays", *map(str, at_delays), "--agent", a.agent,
                "--streams", str(a.streams), "--concurrency", str(a.concurrency), "--deltas", str(a.deltas),
                "--warmup", str(a.warmup), "--timeout", str(a.timeout), *self.load_shape_args(),
            ]  # fmt: skip

        floor_env = dict(self.env, OPENAI_BASE_URL=f"http://{HOST}:{fake_port}/v1")
        floors = self.role("floor", floor_args(*delays), env=floor_env)
        plain_floor = None
        if self.server_setting("OPENAI_FAST_EVENTS"):
            # The floor builds streamed events as the server does; this one as `openai` does by
            # itself (what a plain SDK application gets), at the main scenario's delay.
            say(f"plain floor: the same, OPENAI_FAST_EVENTS=false, {a.delay_ms} ms")
            plain_env = dict(floor_env, OPENAI_FAST_EVENTS="false")
            plain_floor = self.role("floor", floor_args(a.delay_ms), env=plain_env)
            plain_floor = plain_floor[str(a.delay_ms)]

        scenarios = {}
        for delay_ms in delays:
            say(f"server: {a.streams} streams, C={a.concurrency}, {a.deltas} deltas, {delay_ms} ms/delta")
            configure_fake(fake_port, a.deltas, delay_ms / 1000)
            cpu0 = (self.server_cpu(server), cpu_seconds(fake.pid))
            load_args = self.client_args(port, token, "load", a.streams, a.concurrency, delay_ms)
            load = self.role("client", load_args)
            cpu1 = (self.server_cpu(server), cpu_seconds(fake.pid))
            scenarios[delay_ms] = self.scenario_result(delay_ms, load, floors[str(delay_ms)], cpu0, cpu1)
            scenarios[delay_ms]["server_rss_kb_after"] = rss_kb(server.pid)
        ratio_rounds = []
        if plain_floor is not None:
            ratio_rounds.append(self.ratio_round(plain_floor, scenarios[a.delay_ms]))
            for n in range(2, a.ratio_rounds + 1):
                say(f"ratio round {n}/{a.ratio_rounds}: plain floor, then server, {a.delay_ms} ms/delta")
                configure_fake(fake_port, a.deltas, a.delay_ms / 1000)
                round_floor = self.role("floor", floor_args(a.delay_ms), env=plain_env)[str(a.delay_ms)]
                cpu0 = (self.server_cpu(server), cpu_seconds(fake.pid))
                load_args = self.client_args(port, token, "load", a.streams, a.concurrency, a.delay_ms)
                load = self.role("client", load_args)
                cpu1 = (self.server_cpu(server), cpu_seconds(fake.pid))
                result = self.scenario_result(a.delay_ms, load, dict(round_floor), cpu0, cpu1)
                result["db"] = self.db_check(result.pop("run_events"))
                ratio_rounds.append(self.ratio_round(round_floor, result))
        rounds = []
        if a.ttfd_delay_ms is not None:
            rounds.append(scenarios[a.ttfd_delay_ms])
            for n in range(2, a.ttfd_rounds + 1):
                # The machine's speed drifts: each round's floor runs right before its server run.
                say(f"ttfd round {n}/{a.ttfd_rounds}: floor, then server, {a.ttfd_delay_ms} ms/delta")
                configure_fake(fake_port, a.deltas, a.ttfd_delay_ms / 1000)
                round_floor = self.role("floor", floor_args(a.ttfd_delay_ms), env=floor_env)
                round_floor = round_floor[str(a.ttfd_delay_ms)]
                cpu0 = (self.server_cpu(server), cpu_seconds(fake.pid))
                load_args = self.client_args(port, token, "load", a.streams, a.concurrency, a.ttfd_delay_ms)
                load = self.role("client", load_args)
                cpu1 = (self.server_cpu(server), cpu_seconds(fake.pid))
                result = self.scenario_result(a.ttfd_delay_ms, load, round_floor, cpu0, cpu1)
                result["db"] = self.db_check(result.pop("run_events"))
                rounds.append(result)
        low = None
        if a.ttfd_delay_ms is not None and a.ttfd_low_concurrency > 0:
            low = self.ttfd_low(fake_port, port, token, server)
        sweep = {}
        for conc in a.ttfd_sweep if a.ttfd_delay_ms is not None else []:
            # Where between C=2 and C=--concurrency the server-added TTFD leaves its budget.
            level = self.ttfd_low(fake_port, port, token, server, conc=conc, streams=max(4 * conc, 40))
            level["db"] = self.db_check(level.pop("run_events"))
            sweep[conc] = level
        if not a.smoke:
            self.stop(server)
        say(f"persistence capacity: the journal alone, {a.streams} runs x {a.deltas} events")
        sink = self.role("sink", ["--streams", str(a.streams), "--deltas", str(a.deltas), "--agent", a.agent])
        for delay_ms, result in scenarios.items():
            say(f"checking the stored events of the {delay_ms} ms scenario")
            result["db"] = self.db_check(result.pop("run_events"))

        idle = None
        if a.idle_streams > 0:
            configure_fake(fake_port, 2, a.idle_hold)
            try:
                floor_idle = self.floor_idle(fake_port)
            except Exception as exc:
                say(f"idle floor failed: {exc}")
                floor_idle = {"error": str(exc)}
            try:
                # Smoke: reuse the server (saves a start-up; its RSS figure is then only indicative).
                idle = self.idle_scenario(token, fake_port, server=(server, port) if a.smoke else None)
            except Exception as exc:  # report the other figures anyway
                say(f"idle phase failed: {exc}")
                idle = {"error": str(exc)}
            idle["floor"] = floor_idle
        self.stop(server)
        self.stop(fake)
        main = scenarios[a.delay_ms]
        ttfd = scenarios.get(a.ttfd_delay_ms) if a.ttfd_delay_ms is not None else None
        main["sink"] = sink
        main["plain_floor"] = plain_floor
        main["ratio_rounds"] = ratio_rounds
        if low is not None:
            low["db"] = self.db_check(low.pop("run_events"))
        return summary(
            a, self.server_setting, main, ttfd, idle, time.monotonic() - t_start, low, sweep, rounds
        )

    def floor_idle(self, fake_port: int) -> dict:
        """RSS per idle run of the SDK alone, in-process (the fake must be holding its answers)."""
        a = self.args
        say(f"idle floor: {a.idle_streams} in-process runs waiting on the model")
        extra = ["--mode", "idle", "--fake-port", str(fake_port), "--agent", a.agent]
        extra += ["--streams", str(a.idle_streams), "--concurrency", str(a.open_concurrency)]
        extra += ["--timeout", str(a.idle_timeout)]
        env = dict(self.env, OPENAI_BASE_URL=f"http://{HOST}:{fake_port}/v1")
        return self.role("floor", extra, env=env, timeout=a.idle_timeout + 60)

    def ttfd_low(
        self,
        fake_port: int,
        port: int,
        token: str,
        server: subprocess.Popen,
        conc: int | None = None,
        streams: int | None = None,
    ) -> dict:
        """Time to first delta below saturation: --ttfd-low-concurrency streams at --ttfd-delay-ms,
        where neither the floor nor the server queues, so the difference is the server's own
        (or at `conc`, for the sweep)."""
        a = self.args
        conc, delay_ms = conc or a.ttfd_low_concurrency, a.ttfd_delay_ms
        streams = streams or max(conc, a.streams // 2)
        say(f"ttfd at C={conc}: floor and server, {streams} streams, {delay_ms} ms/delta")
        floor_args = ["--fake-port", str(fake_port), "--delays", str(delay_ms), "--agent", a.agent]
        floor_args += ["--streams", str(streams), "--concurrency", str(conc), "--deltas", str(a.deltas)]
        floor_args += ["--warmup", str(a.warmup), "--timeout", str(a.timeout), *self.load_shape_args()]
        floor = self.role(
            "floor", floor_args, env=dict(self.env, OPENAI_BASE_URL=f"http://{HOST}:{fake_port}/v1")
        )
        configure_fake(fake_port, a.deltas, delay_ms / 1000)
        cpu0 = (self.server_cpu(server), 0.0)
        load = self.role("client", self.client_args(port, token, "load", streams, conc, delay_ms))
        cpu1 = (self.server_cpu(server), 0.0)
        return self.scenario_result(delay_ms, load, floor[str(delay_ms)], cpu0, cpu1)

    @staticmethod
    def ratio_round(plain_floor: dict, server: dict) -> dict:
        """One floor-then-server round's throughput figures (CPU per stream: the server's, and the
        plain floor's for the same streams)."""
        return {
            "plain_floor_streams_per_s": plain_floor["streams_per_s"],
            "streams_per_s": server["load"]["streams_per_s"],
            "ratio": server["load"]["streams_per_s"] / plain_floor["streams_per_s"],
            "server_cpu_ms_per_stream": server["server_cpu_ms_per_stream"],
            "plain_floor_cpu_ms_per_stream": plain_floor["cpu_ms_per_stream"],
            "all_events_persisted": server.get("db", {}).get("all_persisted"),
        }

    @staticmethod
    def scenario_result(delay_ms: float, load: dict, floor: dict, cpu0: tuple, cpu1: tuple) -> dict:
        wall = load["wall_s"]
        ttfd_c, ttfd_f = load.pop("ttfd_s"), floor.pop("ttfd_s")
        return {
            "delay_ms": delay_ms,
            "load": load,
            "floor": floor,
            "run_events": load.pop("run_events"),
            "ratio": load["streams_per_s"] / floor["streams_per_s"] if floor["streams_per_s"] else None,
            "ttfd_client_p50_s": pct(ttfd_c, 50),
            "ttfd_client_p99_s": pct(ttfd_c, 99),
            "ttfd_floor_p50_s": pct(ttfd_f, 50),
            "ttfd_floor_p99_s": pct(ttfd_f, 99),
            "ttfd_client_s": ttfd_c,  # for the p99 over all rounds (--ttfd-rounds)
            "ttfd_floor_s": ttfd_f,
            "server_cpu_pct": 100 * (cpu1[0] - cpu0[0]) / wall,
            "server_cpu_ms_per_stream": 1000 * (cpu1[0] - cpu0[0]) / max(1, load["ok"] + load["warmup"]),
            "fake_cpu_pct": 100 * (cpu1[1] - cpu0[1]) / wall,
        }

    def db_check(self, run_events: dict[str, int]) -> dict:
        """Every streamed event must be a RunEvent row; the persist rate comes from their timestamps."""
        from django.db import connections
        from django.db.models import Count, Max, Min

        from agents_app.models import Run, RunEvent

        ids = list(run_events)
        rows = RunEvent.objects.filter(run_id__in=ids)
        agg = rows.aggregate(n=Count("id"), first=Min("created_at"), last=Max("created_at"))
        per_run = {str(k): v for k, v in rows.values_list("run_id").annotate(c=Count("id"))}
        status = dict(Run.objects.filter(pk__in=ids).values_list("status").annotate(c=Count("id")))
        connections.close_all()
        span = (agg["last"] - agg["first"]).total_seconds() if agg["n"] else 0.0
        mismatched = [r for r, n in run_events.items() if per_run.get(r) != n]
        received = sum(run_events.values())
        return {
            "events_received": received,
            "events_in_db": agg["n"],
            "all_persisted": agg["n"] == received and not mismatched,
            "runs_mismatched": len(mismatched),
            "run_status": status,
            "persist_span_s": span,
            "events_persisted_per_s": agg["n"] / span if span else None,
        }

    def disconnect_probes(self, port: int, token: str) -> dict:
        a = self.args
        extra = self.client_args(port, token, "disconnect", a.disconnect_reps, 1)
        extra[extra.index("--stream-timeout") + 1] = str(min(30.0, a.stream_timeout))
        probe = self.role("client", extra)
        from django.db import connections

        from agents_app.models import Run

        by_id = {p["run_id"]: p["closed_at"] for p in probe["probes"]}
        deadline = time.monotonic() + 5.0
        while True:
            runs = list(Run.objects.filter(pk__in=list(by_id)))
            if time.monotonic() > deadline or not any(r.is_active for r in runs):
                break
            time.sleep(0.05)
        connections.close_all()
        notices, ends = [], []
        for run in runs:
            closed_at = by_id[str(run.pk)]
            if run.cancel_requested_at is not None:
                notices.append(run.cancel_requested_at.timestamp() - closed_at)
            if run.finished_at is not None and not run.is_active:
                ends.append(run.finished_at.timestamp() - closed_at)
        return {
            "notice_s": notices,
            "ended_s": ends,
            "misses": a.disconnect_reps - len(notices),
            "status": sorted(r.status for r in runs),
            "errors": probe["errors"],
        }

    def idle_scenario(self, token: str, fake_port: int, server: tuple | None = None) -> dict:
        """A fresh server; the fake sends one delta then waits `idle_hold` s, so the streams sit idle."""
        a = self.args
        say(f"idle: {'same' if server else 'fresh'} server, {a.idle_streams} idle streams")
        server, port = server or self.start_server(fake_port)
        result: dict[str, Any] = {}
        try:
            # Warm the server (imports, first-request costs) so RSS growth is per stream, not start-up.
            self.hold_streams(port, token, min(20, max(2, a.idle_streams // 100)), lambda: None)
            time.sleep(1.0)
            mem_probe(server.pid)
            rss0 = rss_kb(server.pid)

            def measure() -> None:
                time.sleep(2.0)  # let tickers and GC settle
                result["rss_after_kb"] = rss_kb(server.pid)
                mem_probe(server.pid)
                c0, t0 = self.server_cpu(server), time.monotonic()
                time.sleep(a.idle_cpu_window)
                result["idle_server_cpu_pct"] = 100 * (self.server_cpu(server) - c0) / (time.monotonic() - t0)
                say("disconnect probes with the idle streams open")
                result["disconnect_loaded"] = self.disconnect_probes(port, token)

            since = self.db_now()
            opened = self.hold_streams(port, token, a.idle_streams, measure, limit=a.idle_timeout)
            result.update(rss_before_kb=rss0, opened=opened)
            # The idle streams asked for on_disconnect=cancel and were held for seconds (longer
            # than the channel layer's blocking receive): closing them must cancel every run.
            # Each close is a cancel through Django's one sync thread: allow 50 ms per stream.
            limit = max(20.0, 0.05 * opened["ready"])
            result["left_running"], result["all_ended_after_close_s"] = self.active_runs_since(since, limit)
            result["rss_per_stream_kb"] = (result["rss_after_kb"] - rss0) / max(1, opened["ready"])
            result["quiet_after_close_s"] = wait_quiet(server.pid, limit=120)
            say("disconnect probes on a quiet server")
            result["disconnect"] = self.disconnect_probes(port, token)
        finally:
            self.stop(server)
        return result

    @staticmethod
    def db_now() -> Any:
        from django.utils import timezone

        return timezone.now()

    @staticmethod
    def active_runs_since(since: Any, limit: float = 20.0) -> tuple[int, float | None]:
        """(runs created since `since` still active after up to `limit` s, seconds until none was)."""
        from django.db import connections

        from agents_app.models import Run

        started = time.monotonic()
        try:
            while True:
                active = Run.objects.filter(created_at__gte=since, status__in=Run.ACTIVE).count()
                waited = time.monotonic() - started
                if active == 0:
                    return 0, waited
                if waited >= limit:
                    return active, None
                time.sleep(0.2)
        finally:
            connections.close_all()
