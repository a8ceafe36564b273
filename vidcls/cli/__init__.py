"""The `vidcls` command line, one module per command group over the public library API.

    app      the typer app, global options, error handling (one `error:` line, exit codes)
    render   tables, progress bars and message lines (nothing here parses or computes)
    predict  predict and evaluate (their shared options declared once)
    embed    embed (vectors for search, probes, localisation; predict's options)
    zoo      models, download, convert, sample-clip
    bench    benchmark, export
    train    train
    serve    serve (the model behind HTTP; vidcls.serve is imported only when it runs)
"""

from vidcls.cli import bench, embed, predict, serve, train, zoo  # noqa: F401 - each registers its commands on `app`
from vidcls.cli.app import app, main

__all__ = ["app", "main"]
