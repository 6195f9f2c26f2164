#!/usr/bin/env python3
"""A delaying relay for the lab, used as an ssh_config ProxyCommand:

    ProxyCommand python3 tests/lab/delay.py 75 %h %p

It connects to HOST:PORT and relays bytes both ways, holding each chunk for
DELAY_MS milliseconds in each direction (a one-way delay, as netem would give;
this machine's kernel has no netem). Order is kept; throughput is not limited.
"""
import os
import socket
import sys
import threading
import time
from collections import deque


def pump(read, write, delay, done):
    """Reads chunks with `read`, writes each with `write` once it is `delay` s old."""
    queue = deque()
    cond = threading.Condition()
    closed = [False]

    def reader():
        while True:
            try:
                chunk = read()
            except OSError:
                chunk = b""
            with cond:
                queue.append((time.monotonic() + delay, chunk))
                cond.notify()
            if not chunk:
                return

    threading.Thread(target=reader, daemon=True).start()
    while True:
        with cond:
            while not queue:
                cond.wait()
            due, chunk = queue.popleft()
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if not chunk:
            break
        try:
            write(chunk)
        except OSError:
            break
    done.set()


def main():
    delay = float(sys.argv[1]) / 1000.0
    sock = socket.create_connection((sys.argv[2], int(sys.argv[3])))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    done = threading.Event()

    def to_stdout(chunk):
        view = memoryview(chunk)
        while view:
            n = os.write(1, view)
            view = view[n:]

    def to_sock_end():
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def up():
        pump(lambda: os.read(0, 65536), sock.sendall, delay, threading.Event())
        to_sock_end()

    threading.Thread(target=up, daemon=True).start()
    pump(lambda: sock.recv(65536), to_stdout, delay, done)


if __name__ == "__main__":
    main()
