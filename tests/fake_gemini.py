"""A local HTTP server speaking the Gemini REST contract the real google-genai SDK uses: `generateContent`,
and the Batch API (`batchGenerateContent` to create a job, `batches/{id}` to get one, `batches` to list).

The SDK reaches it through GOOGLE_GEMINI_BASE_URL. Each generated image takes the next scripted reply
(default: an image), whether asked for directly or inside a batch; every HTTP request is recorded for
assertions. A batch job stays pending until the test calls `finish_batches()`.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

PATH_RE = re.compile(r"^/(v1|v1beta)/models/([^/:]+):(generateContent|batchGenerateContent)$")
BATCH_RE = re.compile(r"^/(v1|v1beta)/(batches(?:/[^/:]+)?)$")


def png_bytes(colour=(255, 0, 255), size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def image_reply(png: bytes | None = None, text: str = "Here you go") -> dict:
    return {
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": text},
                {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png or png_bytes()).decode()}},
            ]},
            "finishReason": "STOP",
        }],
        "usageMetadata": {"promptTokenCount": 1290, "candidatesTokenCount": 1300, "totalTokenCount": 2590},
    }


def asked_size(body: dict) -> tuple[str | None, str]:
    """(aspect ratio, image size) a generateContent body asks for."""
    config = (body.get("generationConfig") or {}).get("imageConfig") or {}
    return config.get("aspectRatio"), config.get("imageSize") or "1K"


def sized_reply(body: dict) -> dict:
    """An image at the aspect ratio and size asked, as the real models answer (1K: about 1024x1024 of area)."""
    from assets_pkg.domain.image_models import output_size

    ratio, size = asked_size(body)
    return image_reply(png_bytes(size=output_size(ratio, size)))


def _error(code: int) -> dict:
    status = {429: "RESOURCE_EXHAUSTED", 404: "NOT_FOUND", 403: "PERMISSION_DENIED"}.get(code, "INTERNAL")
    return {"error": {"code": code, "message": "scripted", "status": status}}


class FakeGemini:
    def __init__(self):
        self.script: list = []  # items: dict reply, int status, ("sleep", s, reply)
        self.reply = None  # body -> reply, when the script is empty (default: an image at the size asked)
        self.requests: list[dict] = []
        self.batches: dict[str, dict] = {}  # name -> {"model", "displayName", "requests", "state", "output"}
        self.batch_create_delay = 0.0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                m = BATCH_RE.match(self.path.split("?")[0])
                server.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
                if not m:
                    return self._send(404, _error(404))
                if m.group(2) == "batches":
                    return self._send(200, {"operations": [server._batch_json(n) for n in server.batches]})
                if m.group(2) not in server.batches:
                    return self._send(404, _error(404))
                self._send(200, server._batch_json(m.group(2)))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                m = PATH_RE.match(self.path.split("?")[0])
                server.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers),
                                        "body": body, "version": m and m.group(1), "model": m and m.group(2),
                                        "kind": m and m.group(3)})
                if not m:
                    return self._send(404, _error(404))
                if m.group(3) == "batchGenerateContent":
                    reply = server._create_batch(m.group(2), body)
                    time.sleep(server.batch_create_delay)  # the job exists; the client has not heard yet
                    return self._send(200, reply)
                action = server.script.pop(0) if server.script else (server.reply or sized_reply)(body)
                if isinstance(action, tuple) and action[0] == "sleep":
                    time.sleep(action[1])
                    action = action[2]
                if isinstance(action, int):
                    return self._send(action, _error(action))
                self._send(200, action)

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- Batch API ------------------------------------------------------------------------------------
    def _create_batch(self, model: str, body: dict) -> dict:
        batch = body.get("batch", {})
        with self._lock:
            name = f"batches/job{len(self.batches) + 1}"
            self.batches[name] = {
                "model": f"models/{model}", "displayName": batch.get("displayName", ""), "state": "BATCH_STATE_PENDING",
                "requests": batch.get("inputConfig", {}).get("requests", {}).get("requests", []), "output": None,
            }
        return self._batch_json(name)

    def _batch_json(self, name: str) -> dict:
        job = self.batches[name]
        metadata = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
                    "name": name, "model": job["model"], "displayName": job["displayName"], "state": job["state"],
                    "createTime": "2026-11-23T00:00:00Z"}
        if job["output"] is not None:
            metadata["output"] = {"inlinedResponses": {"inlinedResponses": job["output"]}}
        return {"name": name, "metadata": metadata, "done": job["output"] is not None}

    def finish_batches(self, state: str = "BATCH_STATE_SUCCEEDED") -> None:
        """Complete every pending job: each request takes the next scripted reply (an int is a per-request
        error), answered in order with the request's metadata."""
        for job in self.batches.values():
            if job["output"] is not None:
                continue
            output = []
            if state == "BATCH_STATE_SUCCEEDED":
                for req in job["requests"]:
                    action = self.script.pop(0) if self.script else image_reply()
                    answer = {"error": _error(action)["error"]} if isinstance(action, int) else {"response": action}
                    output.append({**answer, **({"metadata": req["metadata"]} if "metadata" in req else {})})
            job["state"], job["output"] = state, output

    @property
    def generate_requests(self) -> list[dict]:
        return [r for r in self.requests if r.get("kind") == "generateContent"]

    @property
    def batch_creations(self) -> list[dict]:
        return [r for r in self.requests if r.get("kind") == "batchGenerateContent"]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
