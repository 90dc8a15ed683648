#!/usr/bin/env python3
"""Drives headless Chromium against a running ops endpoint's status page.

Usage: status_page.py OPS_ADDR [--provider NAME] [--screenshot FILE.png] [--timeout SECS]

Opens http://OPS_ADDR/ in a fresh headless Chromium (through the DevTools protocol over a
WebSocket on 127.0.0.1), subscribes to OPS_ADDR/events itself, and waits for the provider's
first `llm.circuit_opened`. Asserts the page shows that circuit open within a second of the
event (measured from the event's own RFC 3339 timestamp, by the same machine's clock) and that
its event log shows the event's line; then, a few seconds later, saves a screenshot.

Only the Python standard library: a minimal WebSocket client is below. Only loopback.
"""

import argparse
import base64
import datetime
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def fail(message):
    print(f"status page: FAILED: {message}", flush=True)
    sys.exit(1)


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, masked from the client."""

    def __init__(self, url):
        assert url.startswith("ws://"), url
        hostport, _, path = url[len("ws://"):].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        head, _, self.buffer = head.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(head.decode(errors="replace"))

    def _read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _frame(self, opcode, payload):
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, text):
        self._frame(0x1, text.encode())

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("closed by the browser")
            if opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if b0 & 0x80:
                    return message.decode()


class Browser:
    """A fresh headless Chromium and one page of it, driven over the DevTools protocol."""

    def __init__(self, binary):
        self.profile = tempfile.mkdtemp(prefix="fusebox-chromium-")
        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        endpoint = None
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            if "DevTools listening on " in line:
                endpoint = line.split("DevTools listening on ", 1)[1].strip()
                break
        if endpoint is None:
            self.close()
            fail("chromium did not start its DevTools endpoint")
        # Drain the rest of its stderr (dbus noise) so it never blocks.
        threading.Thread(target=self.process.stderr.read, daemon=True).start()
        devtools = endpoint[len("ws://"):].split("/", 1)[0]
        with urllib.request.urlopen(f"http://{devtools}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        if not pages:
            request = urllib.request.Request(f"http://{devtools}/json/new?about:blank", method="PUT")
            with urllib.request.urlopen(request, timeout=10) as r:
                pages = [json.load(r)]
        self.ws = WebSocket(pages[0]["webSocketDebuggerUrl"])
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def close(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def parse_rfc3339(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def watch_events(addr, provider, found, stop):
    """Reads OPS_ADDR/events; records the provider's first `llm.circuit_opened`."""
    try:
        with urllib.request.urlopen(f"http://{addr}/events", timeout=120) as stream:
            name = None
            for raw in stream:
                if stop.is_set():
                    return
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    name = line[len("event:"):].strip()
                elif line.startswith("data:") and name == "llm.circuit_opened":
                    data = json.loads(line[len("data:"):].strip())
                    if data.get("provider") == provider and "event" not in found:
                        found["arrived"] = time.time()
                        found["event"] = data
                        return
    except Exception as error:  # reported by the main thread's timeout
        found["error"] = repr(error)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("addr", help="the ops endpoint, 127.0.0.1:PORT")
    parser.add_argument("--provider", default="primary")
    parser.add_argument("--screenshot", default=None)
    parser.add_argument("--settle", type=float, default=2.5, help="seconds before the screenshot")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    if not args.addr.startswith("127.0.0.1:"):
        fail("loopback only: give 127.0.0.1:PORT")

    browser = Browser(args.chromium)
    stop = threading.Event()
    try:
        browser.call("Page.enable")
        browser.call("Runtime.enable")
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            width=1200, height=760, deviceScaleFactor=1, mobile=False,
        )
        browser.call("Page.navigate", url=f"http://{args.addr}/")
        card = f'document.querySelector(\'.card[data-provider="{args.provider}"]\')'
        deadline = time.monotonic() + 15
        while browser.evaluate(f"{card} !== null") is not True:
            if time.monotonic() > deadline:
                fail(f"no card for provider {args.provider!r} on the page")
            time.sleep(0.05)
        live_deadline = time.monotonic() + 10
        while browser.evaluate("document.getElementById('live').className") != "on":
            if time.monotonic() > live_deadline:
                fail("the page never connected to /events")
            time.sleep(0.05)
        state = browser.evaluate(f"{card}.dataset.state")
        print(f"status page: loaded, {args.provider} is {state}, event stream live", flush=True)
        if state == "open":
            fail(f"{args.provider} was open before the test could watch it open")

        found = {}
        watcher = threading.Thread(
            target=watch_events, args=(args.addr, args.provider, found, stop), daemon=True
        )
        watcher.start()
        shown = None
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            now = time.time()
            if browser.evaluate(f"{card}.dataset.state") == "open":
                shown = now
                break
            time.sleep(0.02)
        if shown is None:
            fail(f"{args.provider} never showed open within {args.timeout:.0f} s ({found})")
        watcher.join(timeout=5)
        if "event" not in found:
            fail(f"no llm.circuit_opened for {args.provider} on /events ({found})")
        event = found["event"]
        published = parse_rfc3339(event["timestamp"])
        latency = shown - published
        print(
            f"status page: {event['message']!r} published at {event['timestamp']}; "
            f"the page showed {args.provider} open {latency * 1000:.0f} ms later "
            f"(the test's own /events reader got it after {(found['arrived'] - published) * 1000:.0f} ms)",
            flush=True,
        )
        if latency > 1.0:
            fail(f"the page showed the open circuit {latency:.3f} s after its event (limit 1 s)")
        log = browser.evaluate("document.getElementById('events').innerText")
        if event["message"] not in (log or ""):
            fail(f"the event log lacks {event['message']!r}: {log!r}")
        badge = browser.evaluate(f"{card}.querySelector('.state').textContent")
        if badge != "OPEN":
            fail(f"the card's badge says {badge!r}")
        print(f"status page: the card says {badge}, the event log shows the line", flush=True)

        if args.screenshot:
            time.sleep(args.settle)
            bottom = browser.evaluate("document.querySelector('main').getBoundingClientRect().bottom")
            height = min(760, int(bottom or 760) + 4)
            clip = {"x": 0, "y": 0, "width": 1200, "height": height, "scale": 1}
            shot = browser.call("Page.captureScreenshot", format="png", clip=clip)
            with open(args.screenshot, "wb") as out:
                out.write(base64.b64decode(shot["data"]))
            print(f"status page: screenshot {args.screenshot} ({os.path.getsize(args.screenshot)} bytes)")
        print("status page: OK", flush=True)
    finally:
        stop.set()
        browser.close()


if __name__ == "__main__":
    main()
