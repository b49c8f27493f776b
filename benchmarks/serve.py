"""`mbm-keras serve` under load: requests/s and latency with dynamic batching on and off, side by side.

    python benchmarks/serve.py                      # trains the demo classifier and search model, serves each
    python benchmarks/serve.py --only classification --model saved_models/demo --clients 32 --seconds 20

Two models of the demo's data: a classifier (image + text + audio, exported as a SavedModel) and a search
model (text queries, image candidates, its catalogue indexed). For each (a real `mbm-keras serve` process on
127.0.0.1, batching on, then off) N concurrent clients (an asyncio loop of aiohttp clients) send one-example
requests for a fixed time: the classifier's are `:predict` (TensorFlow Serving's JSON body: the demo's image
and audio as b64, its text), the search model's `POST /search` (a multipart form: a text query, k=10).
Printed: requests/s, p50 and p99 latency, errors by status, the server's resident memory at the start and end
of the load, and the ratio of batched to unbatched requests/s (the figure: machines are noisy, the ratio
measured side by side is what compares). A third run mixes bad requests (one in four: bad base64, an unknown
input, bytes that are no image, a text where a file is expected; for search an empty query, k=0, an unknown
field) into the batched server's load: they must get 4xx, never 5xx, and the good ones their answers.
"""

import argparse
import asyncio
import base64
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def demo_model(folder):
    """A demo classifier (image + text + audio), trained briefly and exported as a SavedModel."""
    from mbm_keras.data import read_manifest
    from mbm_keras.demo import write_demo_dataset
    from mbm_keras.deploy import export_model
    from mbm_keras.training import train

    data = write_demo_dataset(os.path.join(folder, "data"), seed=0)
    config = {
        "data": {"train": data, "columns": {"image": "image", "text": "text", "audio": "audio", "label": "label"},
                 "preprocessing": {"image_size": [32, 32], "text_length": 8, "sample_rate": 8000, "audio_length": 2000},
                 "batch_size": 32, "missing_modalities": True},
        "model": {"image": "small_cnn", "text": "lstm", "audio": "logmel_cnn", "fusion": "concat"},
        "train": {"epochs": 2, "seed": 0, "keep_best_of": "fusion", "balance": "none"},
        "output": os.path.join(folder, "run"),
    }
    train(config, verbose=0)
    out = export_model(os.path.join(folder, "run"), "saved_model", os.path.join(folder, "demo"), verbose=False)["out"]
    manifest = read_manifest(data)
    return out, manifest


def search_model(folder, data):
    """A demo search model (text queries, image candidates), trained briefly, and its index of the demo's test
    rows. Returns `(run folder, index file)`."""
    from mbm_keras.retrieval.search import build_index
    from mbm_keras.training import train

    config = {
        "data": {"train": data, "columns": {"image": "image", "text": "text", "label": "label"},
                 "preprocessing": {"image_size": [32, 32], "text_length": 8}, "batch_size": 32},
        "model": {"image": "small_cnn", "text": "lstm"},  # the encoders of demo_model's classifier
        "task": {"kind": "retrieval", "query": ["text"], "candidate": ["image"], "embedding_dim": 32},
        "train": {"epochs": 2, "seed": 0},
        "output": os.path.join(folder, "search"),
    }
    train(config, verbose=0)
    index = os.path.join(folder, "catalogue.index")
    build_index(config["output"], os.path.join(os.path.dirname(data), "test.csv"), index, progress=False)
    return config["output"], index


def examples(manifest, n=32):
    root = os.path.dirname(manifest.path)

    def b64(path):
        with open(os.path.join(root, path), "rb") as f:
            return {"b64": base64.b64encode(f.read()).decode()}

    return [{"image": b64(r["image"]), "audio": b64(r["audio"]), "text": r["text"]} for r in manifest.rows[:n]]


BAD = [{"image": {"b64": "%%%"}}, {"colour": "red"}, {"image": {"b64": base64.b64encode(b"no image").decode()}},
       {"audio": "clip.wav"}]
BAD_SEARCHES = [{"text": ""}, {"text": "a red cat", "k": "0"}, {"colour": "red"}, {"text": "a cat", "k": "many"}]


class Predicts:
    """One-example `:predict` requests (TensorFlow Serving's JSON body)."""

    def __init__(self, bodies):
        self.good = [json.dumps({"instances": [b]}) for b in bodies]
        self.bad = [json.dumps({"instances": [b]}) for b in BAD]

    def request(self, i, bad):
        body = (self.bad if bad else self.good)[i % len(self.bad if bad else self.good)]
        return "/v1/models/demo:predict", {"data": body, "headers": {"Content-Type": "application/json"}}


class Searches:
    """`POST /search` requests: a form of a text query and k (URL-encoded, as `curl -d` sends it)."""

    def __init__(self, manifest, n=32):
        self.good = [{"text": r["text"], "k": "10"} for r in manifest.rows[:n]]

    def request(self, i, bad):
        import aiohttp

        fields = BAD_SEARCHES[i % len(BAD_SEARCHES)] if bad else self.good[i % len(self.good)]
        form = aiohttp.FormData()
        for key, value in fields.items():
            form.add_field(key, value)
        return "/search", {"data": form}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, model, batching, max_batch_size, timeout_ms, cpus=None, index=None):
        self.port = free_port()
        command = [sys.executable, "-m", "mbm_keras.cli", "serve", "--model", model, "--port", str(self.port),
                   "--name", "demo", "--max-batch-size", str(max_batch_size), "--batch-timeout-ms", str(timeout_ms)]
        command += ["--index", index] if index else []
        self.proc = subprocess.Popen(command + ([] if batching else ["--no-batching"]), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                                     preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self):
        import httpx

        for _ in range(600):
            if self.proc.poll() is not None:
                raise SystemExit("the server stopped: " + self.proc.stderr.read()[-2000:])
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise SystemExit("the server did not answer /healthz in 2 minutes")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def load(url, requests, clients, seconds, bad_every=0):
    """`clients` loops posting `requests` (`Predicts` or `Searches`) in turn for `seconds`: latencies of the
    good requests, status counts. The client is aiohttp: httpx's AsyncClient tops out near 400 requests/s on
    2 cores, which would measure the client, not the server."""
    import aiohttp

    latencies, statuses, stop = [], {}, time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        sent = itertools.count()  # one stream: every bad_every-th request of it is a bad one, whoever sends it

        async def one(worker):
            while time.perf_counter() < stop:
                i = next(sent)
                bad = bool(bad_every) and i % bad_every == 0
                path, kwargs = requests.request(i // bad_every if bad else i, bad)
                started = time.perf_counter()
                try:
                    async with session.post(url + path, **kwargs) as response:
                        await response.read()
                        code = response.status
                except aiohttp.ClientError as e:
                    code = type(e).__name__
                statuses[code] = statuses.get(code, 0) + 1
                if not bad and code == 200:
                    latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(one(w) for w in range(clients)))
    return latencies, statuses


def measure(model, requests, args, batching, bad_every=0, index=None):
    import numpy as np

    server = Server(model, batching, args.max_batch_size, args.batch_timeout_ms, args.server_cpus, index).wait()
    try:
        asyncio.run(load(server.url, requests, args.clients, 2))  # warm-up: traced functions, allocator
        samples, done = [], threading.Event()

        def sample():  # the server's resident memory each second of the load
            while not done.wait(1.0):
                samples.append(rss_mb(server.proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        before = rss_mb(server.proc.pid)
        sampler.start()
        started = time.perf_counter()
        latencies, statuses = asyncio.run(load(server.url, requests, args.clients, args.seconds, bad_every))
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
        after = rss_mb(server.proc.pid)
    finally:
        server.stop()
    total = sum(statuses.values())
    return {"requests/s": total / elapsed, "good requests/s": len(latencies) / elapsed,
            "p50 ms": 1000 * float(np.percentile(latencies, 50)), "p99 ms": 1000 * float(np.percentile(latencies, 99)),
            "statuses": statuses, "rss MB": (before, after),
            "rss MB halves": (samples[len(samples) // 2] - samples[0], after - samples[len(samples) // 2])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a classifier (run folder or SavedModel) with the demo's inputs (default: train one)")
    parser.add_argument("--only", choices=("classification", "search"), default=None,
                        help="benchmark one model (default: both)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout-ms", type=float, default=5)
    parser.add_argument("--shared-cpus", action="store_true",
                        help="client and server on every CPU (default: the client on the first, the server on the others)")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    args.server_cpus = None
    if not args.shared_cpus and len(cpus) >= 2:  # the load generator must not take the server's CPU time
        args.server_cpus = set(cpus[1:])
        os.sched_setaffinity(0, {cpus[0]})
        print(f"client on CPU {cpus[0]}, server on CPU(s) {', '.join(map(str, cpus[1:]))}", flush=True)
    from mbm_keras.data import read_manifest
    from mbm_keras.demo import write_demo_dataset

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        data = write_demo_dataset(os.path.join(folder, "data"), seed=0)
        manifest = read_manifest(data)
        models = []
        if args.only in (None, "classification"):
            if args.model:
                model = args.model
            else:
                print("Training and exporting a demo classifier ...", flush=True)
                model, _ = demo_model(folder)
            models.append(("classification", model, None, Predicts(examples(manifest))))
        if args.only in (None, "search"):
            print("Training a demo search model and indexing the demo's test rows ...", flush=True)
            run, index = search_model(folder, os.path.join(os.path.dirname(data), "train.csv"))
            models.append(("search", run, index, Searches(manifest)))
        for task, model, index, requests in models:
            for name, batching, bad_every in (("batched", True, 0), ("unbatched", False, 0),
                                              ("batched, 1 in 4 bad", True, 4)):
                print(f"{task}, {name}: {args.clients} clients for {args.seconds:g} s ...", flush=True)
                results[(task, name)] = measure(model, requests, args, batching, bad_every, index)
    report(results, args)


def report(results, args):
    print(f"\n{'model':<16}{'server':<22}{'req/s':>8}{'good/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'RSS MB start->end':>20}  statuses")
    for (task, name), r in results.items():
        rss = f"{r['rss MB'][0]:.0f} -> {r['rss MB'][1]:.0f}"
        print(f"{task:<16}{name:<22}{r['requests/s']:>8.1f}{r['good requests/s']:>8.1f}{r['p50 ms']:>9.1f}"
              f"{r['p99 ms']:>9.1f}{rss:>20}  {r['statuses']}")
    print("\nserver memory growth over the first and the second half of each load (MB): "
          + ", ".join(f"{task} {name} {r['rss MB halves'][0]:+.0f} / {r['rss MB halves'][1]:+.0f}"
                      for (task, name), r in results.items()))
    for task in dict.fromkeys(t for t, _ in results):
        ratio = results[(task, "batched")]["requests/s"] / results[(task, "unbatched")]["requests/s"]
        fives = sum(n for code, n in results[(task, "batched, 1 in 4 bad")]["statuses"].items()
                    if not isinstance(code, int) or code >= 500)
        print(f"{task}: batched / unbatched requests/s at {args.clients} clients: {ratio:.2f}x; "
              f"5xx or failed connections under the mixed load: {fives}")


if __name__ == "__main__":
    main()
