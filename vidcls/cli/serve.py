"""`vidcls serve`: the model behind an HTTP API and a web page (vidcls.serve; the `serve` extra)."""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any

import typer

from vidcls.choices import AUTO
from vidcls.cli.app import command, guarded
from vidcls.cli.predict import (
    BatchSizeOption,
    ClipsOption,
    CropsOption,
    DeviceOption,
    FramesOption,
    LabelsOption,
    PrecisionOption,
    PromptOption,
    RuntimeOption,
    SamplingOption,
    StrideOption,
    ThreadsOption,
    WeightsOption,
    WorkersOption,
)
from vidcls.cli.render import input_line
from vidcls.errors import UsageError, printable

# import name -> distribution, for the message when the extra is missing
SERVE_PACKAGES = {"starlette": "starlette", "uvicorn": "uvicorn", "python_multipart": "python-multipart",
                  "prometheus_client": "prometheus-client"}
PANEL = "Limits"


def require_serve_extra() -> None:
    missing = [dist for module, dist in SERVE_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UsageError(f"vidcls serve needs the serve extra (missing {', '.join(missing)}): "
                         "pip install 'vidcls[serve]'")


@command("serve")
@guarded
def serve_command(
    model: Annotated[str, typer.Option(
        "--model", "-m", metavar="REF",
        help="Zoo name, hf://OWNER/REPO[@REV], a model directory, or an exported .onnx / OpenVINO .xml file.",
    )],
    host: Annotated[str, typer.Option(
        "--host", metavar="ADDRESS",
        help="Address to listen on (default: this machine only; 0.0.0.0 listens on every interface, with a "
             "warning: there is no authentication).",
    )] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0: a free one).")] = 8000,
    clips: ClipsOption = None,
    crops: CropsOption = None,
    frames: FramesOption = None,
    stride: StrideOption = None,
    sampling: SamplingOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = AUTO,
    runtime: RuntimeOption = "torch",
    batch_size: BatchSizeOption = 8,
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    weights: WeightsOption = None,
    labels: LabelsOption = None,
    prompt: PromptOption = None,
    max_wait_ms: Annotated[float, typer.Option(
        "--max-wait-ms", min=0, metavar="MS",
        help="How long a forward pass that is not full waits for other requests' views (dynamic batching).",
    )] = 10.0,
    max_upload_mb: Annotated[float, typer.Option(
        "--max-upload-mb", min=0.001, metavar="MB",
        help="Largest upload; a bigger one is refused (413) as soon as its size is known, not after reading it.",
        rich_help_panel=PANEL,
    )] = 200.0,
    max_queue: Annotated[int, typer.Option(
        "--max-queue", min=1, metavar="N",
        help="Requests inside at once (uploading, decoding, waiting or running); one more is answered 429 "
             "with Retry-After.",
        rich_help_panel=PANEL,
    )] = 64,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.001, metavar="SECONDS",
        help="Longest a request may take, its upload included (504 after it).",
        rich_help_panel=PANEL,
    )] = 120.0,
    grace: Annotated[float, typer.Option(
        "--grace", min=0, metavar="SECONDS",
        help="On SIGTERM or Ctrl-C: how long the requests in flight may take to finish before the server exits.",
        rich_help_panel=PANEL,
    )] = 30.0,
    access_log: Annotated[bool, typer.Option(
        "--access-log/--no-access-log",
        help="One line per request on stderr (uvicorn's access log; off by default: it costs CPU per request, "
             "and /metrics counts requests by status).",
    )] = False,
    allow_urls: Annotated[bool, typer.Option(
        "--allow-urls",
        help="Accept a `url` field instead of an upload: the server fetches it (http and https only, predict's "
             "network timeout, the upload limit). Off by default: it makes the server fetch what clients name.",
        rich_help_panel=PANEL,
    )] = False,
) -> None:
    """Serve a model over HTTP: POST /predict and /embed, GET /models, /health, /metrics, and a web page at /.

    Concurrent requests share the model: their views are batched together into forward passes,
    decoded in worker processes. Stops on SIGTERM or Ctrl-C after finishing the requests in
    flight (exit 0). Needs the serve extra: pip install 'vidcls[serve]'.
    """
    require_serve_extra()
    from vidcls.serve.config import ServeConfig
    from vidcls.serve.server import serve

    run_options = {"clips": clips, "crops": crops, "frames": frames, "stride": stride, "sampling": sampling,
                   "precision": precision, "runtime": runtime, "batch_size": batch_size, "workers": workers,
                   "threads": threads, "labels": labels, "prompt": prompt}
    config = ServeConfig(model, host=host, port=port, weights=None if weights is None else str(weights),
                         device=device, run_options=run_options, max_upload_mb=max_upload_mb, max_queue=max_queue,
                         timeout_s=timeout, max_wait_ms=max_wait_ms, allow_urls=allow_urls, grace_s=grace,
                         access_log=access_log)
    warning = config.exposure_warning()
    if warning:
        input_line("warning", "yellow", warning)

    def ready(url: str, service: Any) -> None:
        settings = service.settings
        input_line("serving", "green", f"{printable(service.loaded.name)} at {url} (web page at /, POST /predict "
                                       f"and /embed; {service.device}, {settings.precision}, batches of "
                                       f"{settings.batch_size} views, {settings.workers} decoding workers)")

    serve(config, on_ready=ready)
