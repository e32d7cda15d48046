"""Where the slow first deltas are, from `stream_bench.py --ttfd-trace DIR` files.

    .venv/bin/python bench/probes/ttfd_waves.py DIR [--delay-ms 5] [--gap-ms 20]

Per load (one file: server or floor, in the order they ran): time to first delta p50 / p99 / max,
and how the starts bunch. Starts less than --gap-ms apart form one wave; the line gives the
largest wave, the share of streams that started in a wave of ten or more, and the p99 of those
streams next to the p99 of the rest. A closed loop of equal-length streams that begins with C
simultaneous starts keeps restarting in waves of about C, and each wave's last first delta waits
for all the starts of its wave.
"""

import argparse
import json
from pathlib import Path


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def waves(points: list[list[float]], gap: float) -> list[list[list[float]]]:
    out: list[list[list[float]]] = []
    for point in sorted(points):
        if out and point[0] - out[-1][-1][0] < gap:
            out[-1].append(point)
        else:
            out.append([point])
    return out


def ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir")
    p.add_argument("--delay-ms", default="5", help="the loads at this upstream delay (file name)")
    p.add_argument("--gap-ms", type=float, default=20.0)
    args = p.parse_args()
    files = sorted(
        Path(args.dir).glob(f"*-{args.delay_ms}ms-*.json"), key=lambda f: int(f.stem.rsplit("-", 1)[1])
    )
    for f in files:
        points = json.loads(f.read_text())
        groups = waves(points, args.gap_ms / 1000)
        in_waves = [t for g in groups if len(g) >= 10 for _s, t in g]
        alone = [t for g in groups if len(g) < 10 for _s, t in g]
        ttfd = [t for _s, t in points]
        share = 100 * len(in_waves) / max(1, len(points))
        print(
            f"{f.stem.split('-')[0]:6s} n={len(points):4d} ttfd p50 {ms(pct(ttfd, 50))}"
            f" p99 {ms(pct(ttfd, 99))} max {ms(max(ttfd, default=None))} ms"
            f" | largest wave {max(map(len, groups), default=0)}, in waves of >= 10: {share:.0f} %"
            f" (p99 {ms(pct(in_waves, 99))}), the rest p99 {ms(pct(alone, 99))}"
        )


if __name__ == "__main__":
    main()
