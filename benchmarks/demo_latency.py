"""How fast the live demo answers: from the command to a ready page, and per query against a support set.

    python benchmarks/demo_latency.py --workdir=W [--support=run01] [--queries=40] [--output=FILE]

1. Starts `python -m siamese_jax.demo --workdir=W` on a free local port and times it until the page
   answers (imports, the model, the app).
2. Times a query against the support set's candidates in this process (siamese_jax.demo.Demo:
   one encoder pass of the query and the head against the cached candidates' embeddings), after one
   warm-up query that compiles.
3. Times the same queries through the server's /classify endpoint with gradio_client (upload,
   conversion of the image file, the model, the answer), after a warm-up.

The queries are the support set's own real queries, written as PNG files. Prints and writes one JSON
object with medians and 90th percentiles in milliseconds, and the device, command, commit and date.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from absl import app, flags
from absl import logging as absl_logging

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The benchmark's flags; defined only when run as a command."""
    flags.DEFINE_string("workdir", None, "A trained workdir.")
    flags.DEFINE_string("support", "run01", "The ready-made support set to classify against.")
    flags.DEFINE_integer("queries", 40, "Queries to time each way (the set's queries, repeated as needed).")
    flags.DEFINE_float("startup_timeout_s", 300.0, "Seconds to wait for the page.")
    flags.DEFINE_string("output", None, "Also write the JSON result to this file.")


def free_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_page(url: str, process: subprocess.Popen, timeout_s: float) -> float:
    """Seconds until `url` answers 200 (the server process must stay alive)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if process.poll() is not None:
            raise SystemExit(f"error: the demo exited with {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"error: the demo did not answer within {timeout_s:.0f} s")


def milliseconds(seconds: list[float]) -> dict:
    """Median and 90th percentile of durations, in milliseconds."""
    values = np.asarray(seconds) * 1000
    return {"median_ms": float(np.median(values)), "p90_ms": float(np.percentile(values, 90)), "count": len(values)}


def main(argv):
    """Runs the three timings and prints the JSON."""
    del argv
    if not FLAGS.workdir:
        sys.exit("error: --workdir=DIR is required")
    import logging

    from gradio_client import Client, handle_file
    from PIL import Image

    logging.getLogger("httpx").setLevel(logging.WARNING)  # One line per request otherwise.
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every restore at INFO.

    from siamese_jax import demo
    from siamese_jax.provenance import provenance

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "-m", "siamese_jax.demo", f"--workdir={FLAGS.workdir}", f"--port={port}"]
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        startup_s = wait_for_page(url, server, FLAGS.startup_timeout_s)
        session = demo.Demo(FLAGS.workdir)
        support, _ = session.support_set(FLAGS.support)
        queries = [support.queries[i % len(support.queries)] for i in range(FLAGS.queries + 1)]
        in_process = []
        for query in queries:
            started = time.perf_counter()
            session.classify(query, FLAGS.support)
            in_process.append(time.perf_counter() - started)
        folder = Path(tempfile.mkdtemp())
        files = []
        for i, query in enumerate(queries):
            path = folder / f"query_{i}.png"
            Image.fromarray(demo.as_display(query[None], session.strokes)[0]).save(path)
            files.append(path)
        client = Client(url, verbose=False)
        over_http = []
        for path in files:
            started = time.perf_counter()
            ranking = client.predict(handle_file(str(path)), FLAGS.support, api_name="/classify")
            over_http.append(time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {
        "benchmark": "demo_latency",
        **provenance(),
        "workdir": FLAGS.workdir,
        "support": FLAGS.support,
        "candidates": len(support.names),
        "startup_s": startup_s,
        "startup_note": "from starting python -m siamese_jax.demo to the page answering 200",
        "model_per_query": milliseconds(in_process[1:]),
        "model_note": "in the demo's process: the query's encoder pass and the head against the cached candidates",
        "http_per_query": milliseconds(over_http[1:]),
        "http_note": "gradio_client /classify on a PNG file: upload, conversion as predict converts, model, answer",
        "classes_in_last_answer": len(ranking),
    }
    text = json.dumps(result, indent=2)
    if FLAGS.output:
        Path(FLAGS.output).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    define_flags()
    app.run(main)
