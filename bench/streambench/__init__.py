"""The modules of `bench/stream_bench.py`, the SSE streaming benchmark, by job: the load client, the
floor, the fake upstream, the sink, the orchestration (processes, scenarios) and the report."""
