"""Serve a model with MLflow's own scoring server on a free loopback port, and smoke-test it.

``serve_model`` runs ``mlflow models serve --env-manager local`` (no hand-written web API) as its
own process group, waits until ``/ping`` answers, yields the base URL and stops the whole group on
exit. Used by the API tests, ``main``, the ``deploy`` step's ``local`` target and the benchmark.
Run as ``python -m steps.serve`` it serves until stopped: Ctrl-C, SIGTERM or SIGHUP stop the
server first, and a SIGKILL takes the server down with it (Linux parent-death signal).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal

from steps.core import config
from steps.deployment.server import serve_model, serving_input_example, smoke_test


def _exit_on_signal(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Serve a model until stopped (Ctrl-C, SIGTERM, SIGHUP), after a smoke test with its input
    example; the server is stopped whichever way this process ends."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model-uri",
        default=config.CHAMPION_MODEL_URI,
        help="model to serve (default: %(default)s)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="scoring-server workers (default: %(default)s)"
    )
    parser.add_argument(
        "--startup-timeout-s",
        type=float,
        default=180.0,
        help="seconds to wait for /ping (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    model_uri = args.model_uri
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    with serve_model(
        model_uri, workers=args.workers, startup_timeout_s=args.startup_timeout_s
    ) as base_url:
        print(json.dumps(smoke_test(base_url, serving_input_example(model_uri))))
        print(f"serving {model_uri} at {base_url} (Ctrl-C or SIGTERM to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
