"""A local HTTP server speaking the Gemini REST `generateContent` contract, for the real google-genai SDK.

The SDK reaches it through GOOGLE_GEMINI_BASE_URL. Each request takes the next scripted reply
(default: an image), and every request is recorded for assertions.
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

PATH_RE = re.compile(r"^/(v1|v1beta)/models/([^/:]+):generateContent$")


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


class FakeGemini:
    def __init__(self):
        self.script: list = []  # items: dict reply, int status, ("sleep", s, reply)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                m = PATH_RE.match(self.path.split("?")[0])
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                        "version": m and m.group(1), "model": m and m.group(2)})
                if not m:
                    return self._send(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})
                action = server.script.pop(0) if server.script else image_reply()
                if isinstance(action, tuple) and action[0] == "sleep":
                    time.sleep(action[1])
                    action = action[2]
                if isinstance(action, int):
                    status = {429: "RESOURCE_EXHAUSTED", 404: "NOT_FOUND", 403: "PERMISSION_DENIED"}.get(action, "INTERNAL")
                    return self._send(action, {"error": {"code": action, "message": "scripted", "status": status}})
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

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
