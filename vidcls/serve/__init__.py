"""`vidcls serve`: one loaded model behind an HTTP API and a web page (the `vidcls[serve]` extra).

The stack is Starlette on uvicorn. Starlette rather than FastAPI: the API is five routes whose
options are a handful of query/form fields, so FastAPI's pydantic models and OpenAPI schema would
add a dependency and a validation layer without adding a check; what matters here is reading the
request body as a stream (to refuse an upload past --max-upload-mb while it arrives, and spool it
to a private file as it comes), which is Starlette's own `request.stream()`. uvicorn is the
reference ASGI server, with the graceful shutdown (stop accepting, finish in-flight requests
within a timeout) that SIGTERM needs. python-multipart (Starlette's own form parser) parses
browser forms incrementally; prometheus_client writes /metrics. LitServe was the third option:
it brings its own batching loop and worker processes, where vidcls already has both (the engine's
Batcher with its failure boundary per video, DataLoader-style decoding workers), and it would own
the process model that SIGTERM's drain depends on.

    config    ServeConfig: the command's options and limits, checked once
    engine    the shared engine: decoding processes, one model thread batching every request's views
    uploads   a request's video to a private temporary file (size limit while streaming), URLs
    metrics   the Prometheus registry (/metrics)
    app       the Starlette app: routes, options, limits, errors as {"error": ...}
    server    uvicorn on a bound socket, SIGTERM's drain, the startup line

Nothing here is imported by `import vidcls` or by the other commands.
"""
