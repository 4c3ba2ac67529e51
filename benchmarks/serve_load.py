#!/usr/bin/env python
"""Requests per second and p50/p95 latency of ``tuckertrt serve`` under 1, 2 and 4 concurrent clients.

One server (the model loaded once) on loopback; each client sends whole-CT requests (volume + affine over HTTP)
back to back, ``--requests`` per concurrency level in all, after one warm-up request.

    python benchmarks/serve_load.py [--ct CT] [--model fixture-3mm] [--requests 8] [--clients 1,2,4] [--backend B]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tuckertrt.inference.io import read_ct
from tuckertrt.serving import protocol as p
from tuckertrt.serving.client import ServerAddress, SegmentClient
from tuckertrt.serving.process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
SHARED_SM = ROOT.parent / "shared" / "data" / "totalsegmentator-examples" / "example_ct_sm.nii.gz"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, default=SHARED_SM if SHARED_SM.exists() else
                        ROOT / "tuckertrt" / "data" / "examples" / "example_ct.nii.gz")
    parser.add_argument("--model", default="fixture-3mm")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--clients", default="1,2,4")
    parser.add_argument("--instances", type=int, default=1, help="serve --instances")
    parser.add_argument("--backend", default=None, help="serve --backend (default: serve's own, auto)")
    args = parser.parse_args()
    image = read_ct(args.ct)
    tensors = {p.VOLUME_INT16: image.array.astype(np.int16), p.AFFINE: image.affine,
               p.CASE_ID: p.case_id_tensor(image.case_name)}
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        backend = ("--backend", args.backend) if args.backend else ()
        server = ServerProcess(args.model, Path(tmp) / "serve.log", ("--instances", str(args.instances), *backend))
        try:
            address = ServerAddress.parse(server.url)
            print(f"server ready {server.start_seconds:.1f} s after launch; {args.ct.name} "
                  f"{'x'.join(map(str, image.array.shape))}, {args.instances} instance(s)")
            one_request(address, tensors)  # warm-up
            rows = [(c, *load(address, tensors, c, args.requests)) for c in map(int, args.clients.split(","))]
        finally:
            server.stop()
    print(f"{'clients':>7} {'req/s':>7} {'p50 s':>7} {'p95 s':>7}")
    for clients, rate, p50, p95 in rows:
        print(f"{clients:>7} {rate:7.3f} {p50:7.2f} {p95:7.2f}")
    return 0


def one_request(address: ServerAddress, tensors: dict[str, np.ndarray]) -> float:
    client = SegmentClient(address)
    try:
        start = time.perf_counter()
        client.infer(tensors, [p.LABELS, p.CLASS_NAMES, p.INFO])
        return time.perf_counter() - start
    finally:
        client.close()


def load(address: ServerAddress, tensors: dict[str, np.ndarray], clients: int, requests: int
         ) -> tuple[float, float, float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        latencies = list(pool.map(lambda _: one_request(address, tensors), range(requests)))
    elapsed = time.perf_counter() - start
    return requests / elapsed, float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95))


if __name__ == "__main__":
    sys.exit(main())
