"""The walkthrough's frontend: counts visits in redis, found by its DNS name.

Serves HTTP on $PORT0; each request INCRs `visits` on $REDIS_HOST:$REDIS_PORT
(RESP over a plain socket: no redis library needed).
"""
import http.server
import os
import socket

REDIS = (os.environ.get("REDIS_HOST", "redis.marathon.mesos"), int(os.environ.get("REDIS_PORT", "6379")))


def visits():
    with socket.create_connection(REDIS, timeout=2) as s:
        s.sendall(b"*2\r\n$4\r\nINCR\r\n$6\r\nvisits\r\n")
        reply = s.recv(64).decode()
    return reply.strip().lstrip(":")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            body = f"hello from {os.environ.get('HOST', '?')}:{os.environ['PORT0']}, visit {visits()}\n"
            self.send_response(200)
        except OSError as e:
            body = f"redis at {REDIS[0]}:{REDIS[1]} does not answer: {e}\n"
            self.send_response(503)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body.encode())


http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT0"])), Handler).serve_forever()
