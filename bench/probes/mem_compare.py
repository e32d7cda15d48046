"""What one idle stream adds, from the MEM_PROBE dumps (see sitecustomize.py), server next to floor.

    .venv/bin/python bench/probes/mem_compare.py --streams 2000 [--top 40]

Reads /tmp/mem_probe_<pid>_1.json and _2.json of the two most recent processes that wrote both
(the idle floor, then the server) and prints, per stream: RSS, pymalloc's allocated bytes, the
census by type and by holder, largest server-minus-floor first.
"""

import argparse
import glob
import json
import os


def per_stream(pid: str, streams: int) -> dict:
    with open(f"/tmp/mem_probe_{pid}_1.json") as f:
        before = json.load(f)
    with open(f"/tmp/mem_probe_{pid}_2.json") as f:
        after = json.load(f)
    # From the end of the first dump's census (what the census itself left is not the streams').
    out = {
        "rss_kb": (after["rss_kb"] - before["rss_kb_after"]) / streams,
        "pymalloc_kb": (after["pymalloc_used"] - before["pymalloc_used_after"]) / 1024 / streams,
    }
    for table in ("by_type", "size_by_type", "by_holder", "size_by_holder"):
        keys = set(before[table]) | set(after[table])
        out[table] = {k: (after[table].get(k, 0) - before[table].get(k, 0)) / streams for k in keys}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, required=True)
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args()
    complete = glob.glob("/tmp/mem_probe_*_2.json")
    complete.sort(key=os.path.getmtime)
    pids = [path.split("_")[-2] for path in complete][-2:]
    if len(pids) < 2:
        raise SystemExit("need the dumps of two processes (the idle floor and the server)")
    floor, server = (per_stream(pid, args.streams) for pid in pids)
    for name in ("rss_kb", "pymalloc_kb"):
        added = server[name] - floor[name]
        print(f"{name:12} floor {floor[name]:7.1f}  server {server[name]:7.1f}  added {added:6.1f}")
    for table, sizes in (("by_type", "size_by_type"), ("by_holder", "size_by_holder")):
        print(f"\n{'floor B':>8} {'server B':>9} {'added B':>8} {'floor #':>8} {'server #':>9}  {table}")
        keys = set(floor[sizes]) | set(server[sizes])
        ranked = sorted(keys, key=lambda k: -(server[sizes].get(k, 0) - floor[sizes].get(k, 0)))
        for key in ranked[: args.top]:
            f_size, s_size = floor[sizes].get(key, 0), server[sizes].get(key, 0)
            f_n, s_n = floor[table].get(key, 0), server[table].get(key, 0)
            print(f"{f_size:8.0f} {s_size:9.0f} {s_size - f_size:8.0f} {f_n:8.2f} {s_n:9.2f}  {key}")


if __name__ == "__main__":
    main()
