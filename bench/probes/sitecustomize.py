"""Diagnostic probes for the benchmark's processes (not used by the server or the tests).

Put this directory first on PYTHONPATH and Python imports it at start-up in every process the
benchmark spawns (server, floor, client). Time goes to py-spy (`py-spy record --pid ...`), which
reads a live process without changing it:

    PYTHONPATH=bench/probes TM_PROBE=8 TM_STREAMS=300 .venv/bin/python bench/stream_bench.py ...
        In the daphne server only: the first SIGUSR1 starts tracemalloc (8 frames) and takes a
        snapshot, the second one writes what was allocated in between, per stream, by package
        and by line, to /tmp/tm_report.txt. Send the first once the idle phase's warm-up is done
        and the second while its streams are open.

    PYTHONPATH=bench/probes GC_PROBE=1 .venv/bin/python bench/stream_bench.py ... --keep
        Every ~2 s (and at exit) each process prints the garbage collections per generation, the
        time they took and their share of the process's CPU time.

    PYTHONPATH=bench/probes MEM_PROBE=1 .venv/bin/python bench/stream_bench.py --idle-streams 2000 ...
        In the server and the idle floor: the benchmark sends SIGUSR2 just before the idle
        streams (runs) open and again once they are all open; each signal writes
        /tmp/mem_probe_<pid>_<n>.json: RSS, the bytes in pymalloc's allocated blocks, and a census
        of the gc-tracked objects (by type, and the deques, sets, dicts and lists by the
        object and, where known, the attribute that holds them; coroutines and generators by
        function). Then
        `bench/probes/mem_compare.py` prints what one idle stream adds, server next to floor.
        Sizes are `sys.getsizeof`, so shared and untracked objects (str, bytes, ints) are not in
        the census; RSS minus the pymalloc figure is what lives outside Python's small-object
        allocator (deque blocks, dicts and lists over 512 bytes, C libraries).
"""

import os
import sys
import time

_TM_PROBE = os.environ.get("TM_PROBE")


def _package(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/agents_app/" in filename or "/research_app/" in filename:
        return "this project"
    return "stdlib " + os.path.basename(filename)


def _install_tracemalloc_probe() -> None:
    import collections
    import signal
    import tracemalloc

    streams = int(os.environ.get("TM_STREAMS", "1"))
    snapshots = []

    def on_signal(_signum, _frame) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(_TM_PROBE))
        snapshots.append(tracemalloc.take_snapshot())
        if len(snapshots) < 2:
            return
        before, after = snapshots[-2:]
        by_package: collections.Counter = collections.Counter()
        for stat in after.compare_to(before, "traceback"):
            by_package[_package(stat.traceback[-1].filename)] += stat.size_diff
        total = sum(by_package.values())
        with open("/tmp/tm_report.txt", "w") as out:
            print(f"total {total / 1024:.0f} KB, per stream {total / 1024 / streams:.1f} KB", file=out)
            for name, size in by_package.most_common(30):
                print(f"{size / 1024 / streams:8.2f} KB per stream  allocated in {name}", file=out)
            # Who asked for it: the innermost frame outside the standard library (needs TM_PROBE > 1).
            by_caller: collections.Counter = collections.Counter()
            for stat in after.compare_to(before, "traceback"):
                frames = [f for f in reversed(stat.traceback) if "/lib/python3" not in f.filename]
                where = frames[0] if frames else stat.traceback[-1]
                site = where.filename.split("site-packages/")[-1].replace(os.getcwd() + "/", "")
                by_caller[f"{site}:{where.lineno}"] += stat.size_diff
            print("--- by caller outside the standard library", file=out)
            for name, size in by_caller.most_common(40):
                print(f"{size / 1024 / streams:8.2f} KB per stream  {name}", file=out)
            print("--- by line", file=out)
            for stat in after.compare_to(before, "lineno")[:40]:
                frame = stat.traceback[0]
                print(
                    f"{stat.size_diff / 1024 / streams:8.2f} KB {stat.count_diff / streams:6.1f} objects "
                    f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}",
                    file=out,
                )

    signal.signal(signal.SIGUSR1, on_signal)


def _install_gc_probe() -> None:
    import atexit
    import gc

    spent = {"s": 0.0, "n": [0, 0, 0], "t0": 0.0, "by_gen": [0.0, 0.0, 0.0]}
    window = {"start": time.monotonic(), "cpu": time.process_time()}

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            spent["t0"] = time.perf_counter()
            return
        took = time.perf_counter() - spent["t0"]
        spent["s"] += took
        spent["n"][info["generation"]] += 1
        spent["by_gen"][info["generation"]] += took
        now = time.monotonic()
        if now - window["start"] >= 2.0:
            report()

    def report() -> None:
        now, cpu = time.monotonic(), time.process_time()
        print(
            f"GC pid={os.getpid()} collections(gen0,1,2)={spent['n']} "
            f"ms(gen0,1,2)={[round(1000 * x) for x in spent['by_gen']]} "
            f"gc_share_of_cpu={100 * spent['s'] / max(1e-9, cpu - window['cpu']):.1f}%",
            file=sys.stderr,
            flush=True,
        )
        spent.update(s=0.0, n=[0, 0, 0], by_gen=[0.0, 0.0, 0.0])
        window.update(start=now, cpu=cpu)

    gc.callbacks.append(callback)
    atexit.register(report)


def _rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _pymalloc_used() -> int:
    """Bytes in pymalloc's allocated blocks (sys._debugmallocstats writes to the C stderr)."""
    import re
    import tempfile

    saved = os.dup(2)
    with tempfile.TemporaryFile("w+") as out:
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        found = re.search(r"bytes in allocated blocks\s*=\s*([\d,]+)", out.read())
    return int(found.group(1).replace(",", "")) if found else -1


def _census() -> dict:
    import collections
    import gc

    names = ("by_type", "size_by_type", "by_holder", "size_by_holder")
    tables = {name: collections.Counter() for name in names}
    for obj in gc.get_objects():
        try:
            _count(obj, tables)
        except Exception:  # attributes that cannot be read: counted by type only
            tables["by_type"][f"{type(obj).__module__}.{type(obj).__qualname__}"] += 1
    return tables


def _count(obj: object, tables: dict) -> None:
    import collections
    import gc
    import types

    kind = type(obj)
    name = f"{kind.__module__}.{kind.__qualname__}"
    size = sys.getsizeof(obj, 0)
    tables["by_type"][name] += 1
    tables["size_by_type"][name] += size
    code = {
        types.CoroutineType: "cr_code",
        types.AsyncGeneratorType: "ag_code",
        types.GeneratorType: "gi_code",
    }.get(kind)
    if code is not None:
        key = f"{kind.__name__} {getattr(obj, code).co_qualname}"
        tables["by_holder"][key] += 1
        tables["size_by_holder"][key] += size
        return
    if kind in (dict, list, tuple, set) or isinstance(obj, (type, types.ModuleType, types.FunctionType)):
        return
    # The containers an instance holds. gc.get_referents, not vars(): on Python 3.11 reading
    # __dict__ builds a dict for every instance whose attributes live inline, which would be
    # memory the census itself adds. Attribute names are known only where a dict exists.
    for ref in gc.get_referents(obj):
        values = ref.items() if type(ref) is dict else [("?", ref)]
        for attr, value in values:
            if type(value) in (collections.deque, set, dict, list):
                key = f"{type(value).__name__} {name}.{attr}"
                tables["by_holder"][key] += 1
                tables["size_by_holder"][key] += sys.getsizeof(value, 0)


def _install_memory_probe() -> None:
    import json
    import signal

    taken = {"n": 0}

    def on_signal(_signum, _frame) -> None:
        # Runs inside whatever the process was doing: it must never raise into it.
        taken["n"] += 1
        try:
            dump = {"rss_kb": _rss_kb(), "pymalloc_used": _pymalloc_used(), **_census()}
            # The census's own leftovers (freed memory the process keeps): a later dump's growth
            # is measured from here.
            dump.update(rss_kb_after=_rss_kb(), pymalloc_used_after=_pymalloc_used())
        except Exception as exc:
            dump = {"error": repr(exc)}
        with open(f"/tmp/mem_probe_{os.getpid()}_{taken['n']}.json", "w") as out:
            json.dump(dump, out)

    signal.signal(signal.SIGUSR2, on_signal)


if os.environ.get("GC_PROBE"):
    _install_gc_probe()
if _TM_PROBE and "daphne" in " ".join(sys.argv):
    _install_tracemalloc_probe()
if os.environ.get("MEM_PROBE") and ("daphne" in " ".join(sys.argv) or "floor" in sys.argv):
    _install_memory_probe()
