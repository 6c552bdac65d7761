#!/usr/bin/env python3
"""Serves the git repositories under --root over git's smart HTTP protocol on loopback.

A small front for `git http-backend` (run as a CGI program per request), so that
clients which only speak smart HTTP -- Flux's source-controller uses go-git, which has
no dumb-HTTP support -- can clone and fetch from a local repository:

    git-http.py --root DIR [--port PORT] [--host 127.0.0.1] [--receive-pack] [--quiet]

The repository DIR/a/b (a bare repo or a work tree's .git) is http://HOST:PORT/a/b.
With --port 0 (the default) the kernel picks a free port. Either way the first line on
stdout is the port number, printed once the socket is listening; request logs go to
stderr. Every repository under --root is exported (GIT_HTTP_EXPORT_ALL); pushes are
refused unless --receive-pack is given. Standard library only; stops on SIGTERM/SIGINT.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


def find_backend():
    exec_path = subprocess.run(
        ["git", "--exec-path"], check=True, capture_output=True, text=True
    ).stdout.strip()
    backend = os.path.join(exec_path, "git-http-backend")
    if not os.access(backend, os.X_OK):
        sys.exit(f"git-http.py: {backend} not found or not executable")
    return backend


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, the response ends when the connection
    # closes, so the CGI output can be streamed without a length or chunking.
    protocol_version = "HTTP/1.0"
    server_version = "signoff-git-http/1"

    def do_GET(self):
        self.run_backend()

    def do_POST(self):
        self.run_backend()

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            sys.stderr.write("git-http: %s %s\n" % (self.address_string(), fmt % args))

    def request_body(self):
        """The request body as bytes (Content-Length or chunked)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def run_backend(self):
        url = urlsplit(self.path)
        body = self.request_body() if self.command == "POST" else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.server.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": self.request_version,
            "SERVER_SOFTWARE": self.server_version,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": unquote(url.path),
            "QUERY_STRING": url.query,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
        }
        for header, var in (
            ("Content-Encoding", "HTTP_CONTENT_ENCODING"),  # gzip request bodies
            ("Git-Protocol", "GIT_PROTOCOL"),  # protocol v2
            ("Accept", "HTTP_ACCEPT"),
        ):
            if self.headers.get(header):
                env[var] = self.headers[header]
        if self.server.receive_pack:
            env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.receivepack",
                       GIT_CONFIG_VALUE_0="true")
        proc = subprocess.Popen(
            [self.server.backend], env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        # Feed stdin and drain stderr on threads so a large body or output cannot
        # deadlock against the pipe buffers.
        errs = []
        feeder = threading.Thread(target=self._feed, args=(proc.stdin, body))
        drainer = threading.Thread(target=lambda: errs.append(proc.stderr.read()))
        feeder.start()
        drainer.start()
        status, headers = 200, []
        while True:
            line = proc.stdout.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip(), value.strip()
            if name.lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((name, value))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        try:
            shutil.copyfileobj(proc.stdout, self.wfile)
        except (BrokenPipeError, ConnectionResetError):
            pass
        proc.stdout.close()
        feeder.join()
        drainer.join()
        rc = proc.wait()
        err = b"".join(errs).decode(errors="replace").strip()
        if rc != 0 or err:
            sys.stderr.write(f"git-http: git http-backend exited {rc}: {err}\n")

    @staticmethod
    def _feed(pipe, body):
        try:
            pipe.write(body)
        except BrokenPipeError:
            pass
        finally:
            try:
                pipe.close()
            except BrokenPipeError:
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="directory holding the repositories")
    ap.add_argument("--port", type=int, default=0, help="0: pick a free port (default)")
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    ap.add_argument("--receive-pack", action="store_true", help="allow git push")
    ap.add_argument("--quiet", action="store_true", help="no request log")
    args = ap.parse_args()

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.root = os.path.abspath(args.root)
    server.backend = find_backend()
    server.receive_pack = args.receive_pack
    server.quiet = args.quiet
    print(server.server_address[1], flush=True)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
