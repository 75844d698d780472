"""A drop from a store's feed against the same pictures in a folder: fetching them, then scanning them.

    python benchmarks/make_images.py --out /tmp/bench-2k --count 2000 --size 1200x900
    python benchmarks/store_import.py --images /tmp/bench-2k

Serves the pictures from a local HTTP server (with ETags, counting the requests in flight and the bytes
sent), writes a Merchant Center TSV feed naming two pictures per row, and times: the first import (every
picture fetched and checked), the scan of the drop it made, an import with nothing changed (one
conditional request per picture), and the scan of the same pictures as a plain folder drop. A run encodes
the same pictures either way, so its encode is not timed here.
"""

import argparse
import hashlib
import http.server
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.domain.drops import ProductDrop  # noqa: E402
from assets_pkg.domain.storefront.importer import IN_FLIGHT, import_export  # noqa: E402
from assets_pkg.stages.scan.logic import scan_drop  # noqa: E402


def serve(folder: Path):
    stats = {"in_flight": 0, "max_in_flight": 0, "bytes": 0, "requests": 0}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            with lock:
                stats["in_flight"] += 1
                stats["requests"] += 1
                stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
            try:
                path = folder / self.path.lstrip("/")
                st = path.stat()
                etag = '"' + hashlib.sha256(f"{st.st_size}-{st.st_mtime_ns}".encode()).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with lock:
                    stats["bytes"] += len(body)
            finally:
                with lock:
                    stats["in_flight"] -= 1

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, stats


def served_feed(description: str):
    """The command line's --images folder served over HTTP, and a Merchant Center TSV feed naming two of its
    JPEGs per row: (the pictures' names, the server, its counters, the feed's text, its row count)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--images", required=True, type=Path)
    images = parser.parse_args().images
    pictures = sorted(p.name for p in images.glob("*.jpg"))
    server, stats = serve(images)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    rows = ["id\ttitle\timage_link\tadditional_image_link\tproduct_type\tcolor"]
    for i in range(len(pictures) // 2):
        rows.append(f"SKU-{i:05d}\tProduct {i}\t{url}/{pictures[2 * i]}\t{url}/{pictures[2 * i + 1]}\tBench > Things\tRed")
    return images, pictures, server, stats, "\n".join(rows) + "\n", len(rows) - 1


def main() -> None:
    images, pictures, server, stats, text, row_count = served_feed(__doc__.splitlines()[0])
    work = Path(tempfile.mkdtemp())
    feed = work / "feed.tsv"
    feed.write_text(text)
    allow = frozenset({"127.0.0.1"})

    t = time.perf_counter()
    first = import_export(feed, work / "drop", allow, 50_000_000, 64_000_000)
    fetch_s = time.perf_counter() - t
    t = time.perf_counter()
    scan_drop(ProductDrop("drop", work / "drop"))
    scan_fetched_s = time.perf_counter() - t
    sent, peak = stats["bytes"], stats["max_in_flight"]
    stats.update(bytes=0, requests=0)
    t = time.perf_counter()
    again = import_export(feed, work / "drop", allow, 50_000_000, 64_000_000)
    again_s = time.perf_counter() - t
    t = time.perf_counter()
    scan_drop(ProductDrop("bench", images))
    scan_folder_s = time.perf_counter() - t
    print(f"{row_count} rows, {first.pictures} pictures ({first.fetched} fetched, {len(first.failed)} failed), "
          f"{sent / 1e6:.1f} MB, at most {peak} in flight (bound {IN_FLIGHT})")
    print(f"first import {fetch_s:.1f} s + scan {scan_fetched_s:.1f} s = {fetch_s + scan_fetched_s:.1f} s; the same "
          f"pictures scanned from a folder {scan_folder_s:.1f} s ({(fetch_s + scan_fetched_s) / scan_folder_s:.2f}x)")
    print(f"import with nothing changed: {again_s:.2f} s, {again.unchanged} unchanged, {stats['requests']} requests, "
          f"{stats['bytes']} bytes")
    server.shutdown()


if __name__ == "__main__":
    main()
