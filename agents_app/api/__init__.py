"""The surfaces over the run engine: REST views, SSE and WebSocket consumers. They parse, authorize,
call the engine and write responses; none writes a run or an event itself."""
