"""``python -m engine serve``: load the models once and serve jobs to the Krita plugin over the bridge.

The socket side is :mod:`bridge.server` (standard library only); the job kinds are :mod:`engine.jobs`.
torch and the models are imported inside :func:`run`, so building the argument parser stays cheap.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from typing import Any

from bridge.limits import DEFAULT_LIMITS, JobLimits
from bridge.protocol import Limits
from bridge.server import MIN_TOKEN_LENGTH, TOKEN_ENV, BridgeServer, is_loopback

log = logging.getLogger("engine.serve")


def default_log_path() -> str:
    from engine.models.registry import user_data_dir

    return str(user_data_dir() / "logs" / "engine-serve.log")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("--models", default="default", help="models preset, or a folder with a preset.json")
    parser.add_argument(
        "--device", default=None, help="cuda, cuda:N, mps or cpu (default: the best available)"
    )
    parser.add_argument("--weights-dir", default=None, help="folder of the weight files")
    parser.add_argument("--log-file", default=None, help=f"log file (default: {default_log_path()})")
    parser.add_argument(
        "--max-attachment-mb",
        type=int,
        default=None,
        help="largest image a client may send, in MiB (default: enough for 16384x16384 RGBA)",
    )
    parser.add_argument(
        "--max-candidates",
        type=int,
        default=None,
        metavar="N",
        help=f"most candidates one job may ask for (default and ceiling {DEFAULT_LIMITS.max_candidates})",
    )
    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=None,
        metavar="MPX",
        help="largest image a client may send, and canvas an extension may make, in megapixels (default "
        f"and ceiling {DEFAULT_LIMITS.max_image_pixels / 1e6:.1f})",
    )
    parser.add_argument(
        "--max-job-seconds",
        type=float,
        default=None,
        metavar="S",
        help="refuse jobs estimated (from this device's measured step times) to take longer "
        "(default: no cap)",
    )
    parser.add_argument(
        "--max-jobs-per-connection",
        type=int,
        default=None,
        metavar="N",
        help="queued and running jobs one client may hold "
        f"(default {DEFAULT_LIMITS.max_jobs_per_connection})",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="accept TLS connections only, with a self-signed certificate made on first use (or the one "
        "given by --tls-cert/--tls-key); its SHA-256 fingerprint is printed for the plugin's remote settings",
    )
    parser.add_argument("--tls-dir", default=None, help="where --tls keeps its certificate (default: "
                        "<user data folder>/tls)")
    parser.add_argument("--tls-cert", default=None, help="your own certificate (PEM) for --tls")
    parser.add_argument("--tls-key", default=None, help="the key (PEM) of --tls-cert")
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes (used by the plugin so the engine never outlives Krita)",
    )
    from engine.cluster.service import add_arguments as add_cluster_arguments

    add_cluster_arguments(parser)  # --ray, --ray-workers (docs/cluster.md)


def _setup_logging(log_file: str) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=5 << 20, backupCount=3)
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    except OSError as exc:
        log.warning("cannot write the log file %s: %s", log_file, exc)


def _tls_setup(args: argparse.Namespace) -> tuple[Any, str]:
    """(SSL context, certificate fingerprint) for --tls, else (None, ""). Prints the fingerprint."""
    if not args.tls:
        if args.tls_cert or args.tls_key:
            raise ValueError("--tls-cert and --tls-key need --tls")
        return None, ""
    from bridge import tls

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("give both --tls-cert and --tls-key, or neither (a certificate is then made)")
    if args.tls_cert:
        cert, key, made = args.tls_cert, args.tls_key, False
    else:
        from engine.models.registry import user_data_dir

        cert, key, made = tls.make_self_signed(args.tls_dir or str(user_data_dir() / "tls"))
    context = tls.server_context(cert, key)
    fingerprint = tls.certificate_fingerprint(cert)
    log.info("TLS certificate %s (%s)", cert, "made now" if made else "reused")
    # On stderr (and in the log) for the person starting the engine: it goes into the plugin's settings.
    print(f"TLS certificate SHA-256 fingerprint: {fingerprint}", file=sys.stderr, flush=True)
    return context, fingerprint


def _job_limits(args: argparse.Namespace) -> JobLimits:
    """The built-in limits (bridge/limits.py) lowered by the --max-* options (ValueError naming one)."""
    pixels = None if args.max_megapixels is None else int(args.max_megapixels * 1e6)
    values = {
        "--max-candidates": ("max_candidates", args.max_candidates),
        "--max-megapixels": ("max_image_pixels", pixels),
        "--max-job-seconds": ("max_job_seconds", args.max_job_seconds),
        "--max-jobs-per-connection": ("max_jobs_per_connection", args.max_jobs_per_connection),
    }
    limits = DEFAULT_LIMITS
    for option, (name, value) in values.items():
        try:
            limits = limits.lowered(**{name: value})
        except ValueError as exc:
            raise ValueError(f"{option}: {exc}") from None
    if args.max_candidates is not None:  # a job's batch cannot exceed its candidates
        limits = dataclasses.replace(limits, max_batch_size=min(limits.max_batch_size, limits.max_candidates))
    return limits


def run(args: argparse.Namespace) -> int:
    token = os.environ.pop(TOKEN_ENV, "")  # popped: processes the engine starts need not see it
    if len(token) < MIN_TOKEN_LENGTH:
        print(
            f"error: set {TOKEN_ENV} to a random token of at least {MIN_TOKEN_LENGTH} characters (the plugin "
            "does this); it is read from the environment so that other users cannot see it on the command "
            "line",
            file=sys.stderr,
        )
        return 2
    if not 0 <= args.port <= 65535:
        print("error: --port must be between 0 and 65535", file=sys.stderr)
        return 2
    from engine.cluster.service import ClusterError, check_arguments

    try:
        check_arguments(args)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log_file = args.log_file or default_log_path()
    _setup_logging(log_file)
    try:
        ssl_context, fingerprint = _tls_setup(args)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"error: --tls: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(args.host) and ssl_context is None:
        log.warning(
            "listening on %s, not loopback: other machines can reach this engine; they still need the token, "
            "but the traffic is not encrypted (use --tls, or an SSH tunnel, on untrusted networks)",
            args.host,
        )
    limits = Limits()
    if args.max_attachment_mb is not None:
        if args.max_attachment_mb < 1:
            print("error: --max-attachment-mb must be at least 1", file=sys.stderr)
            return 2
        size = args.max_attachment_mb << 20
        limits = dataclasses.replace(limits, max_attachment_bytes=size, max_message_bytes=3 * size)
    try:
        job_limits = _job_limits(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    limits = dataclasses.replace(limits, max_image_pixels=job_limits.max_image_pixels)

    # torch's compiler cache folder, which importing kornia/open_clip creates, goes with the engine's data
    # rather than into the system's temporary folder, where it would stay behind.
    from engine.models.registry import user_data_dir

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(user_data_dir() / "cache" / "torchinductor"))

    # Anything the engine prints while loading must not be taken for the ready line.
    ready_out = sys.stdout
    sys.stdout = sys.stderr
    from engine import __version__
    from engine.editing.shared.params import preset_edit_defaults
    from engine.errors import EngineError
    from engine.jobs import job_runners
    from engine.models.loading import load_models

    started = time.monotonic()
    cluster = None
    try:
        from engine.models.registry import get_preset

        preset = get_preset(args.models)
        edit_defaults = preset_edit_defaults(preset)
        if args.ray:
            from engine.cluster.service import start_cluster

            cluster = start_cluster(args, limits, edit_defaults, log_file, job_limits)
            models, runners = cluster.models, cluster.runners
        else:
            models = load_models(preset, args.weights_dir, args.device)
            runners = job_runners(models, limits, edit_defaults, log_file, args.models, job_limits)
        server = BridgeServer(
            runners, token, args.host, args.port, limits, versions={"engine": __version__},
            ssl_context=ssl_context, job_limits=job_limits,
        )
        if cluster is not None:
            server.jobs = cluster.queue  # jobs run on the cluster's workers, many at once
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (EngineError, OSError) as exc:
        if cluster is not None:
            cluster.shutdown()
        if isinstance(exc, EngineError):
            log.error("%s", exc)
        else:
            log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    log.info(
        "models %r loaded on %s in %.1f s",
        args.models,
        getattr(models, "device", "?"),
        time.monotonic() - started,
    )
    if edit_defaults:
        log.info("preset %r recommends %s for parameters a request leaves out", preset.name, edit_defaults)

    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if args.exit_on_stdin_eof:

        def watch_stdin() -> None:
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except (OSError, ValueError):
                pass
            log.info("stdin closed: stopping")
            stop.set()

        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()

    server.start()
    ready = {"port": server.port, "pid": os.getpid(), "host": server.host}
    if fingerprint:
        ready["tls_fingerprint"] = fingerprint
    ready_out.write(json.dumps(ready) + "\n")
    ready_out.flush()
    while not stop.wait(0.5):
        pass
    # The job was cancelled; a diffusion step may not notice for a while, and whoever asked for it is gone
    # (Krita quit or died): do not wait for it long, os._exit below ends its thread.
    server.close(job_timeout=1.0)
    if cluster is not None:
        cluster.shutdown()
    log.info("stopped")
    logging.shutdown()
    sys.stderr.flush()
    # Everything is closed; skip the interpreter's teardown of torch, which takes seconds for nothing.
    os._exit(0)
