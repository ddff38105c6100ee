#!/usr/bin/env python3
"""Memory per idle MQTT connection: our broker against Debian's mosquitto.

Each broker is started afresh on 127.0.0.1; its VmRSS is read before the
first connection and again once N raw clients have connected (a bare
CONNECT: clean session, keep alive 60 s, nothing else, CONNACK read) and
stayed idle for a moment. Prints the growth over N for each broker, and the
ratio, twice: for VmRSS, and for RssAnon, its anonymous part, which leaves
out the executable's code that the first clients page in once. Only the standard library: the clients are plain sockets, so that
only the broker is measured.

    bench/mqtt-idle-memory.py [--clients 3000] [--version 311|5]
        [--binary target/release/sessionwire] [--brokers sessionwire,mosquitto]
"""

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

SETTLE_S = 2.0
START_WAIT_S = 10.0
CONNACK_WAIT_S = 10.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_kib(pid):
    """(VmRSS, RssAnon) of a process, in KiB: all it has resident, and the
    anonymous part of it (heap, stacks), without the file-backed pages of
    its executable and libraries."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                fields[name] = int(value.split()[0])
    if len(fields) != 2:
        raise RuntimeError(f"no VmRSS/RssAnon for {pid}")
    return fields["VmRSS"], fields["RssAnon"]


def mqtt_string(text):
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id, version):
    level = 4 if version == "311" else 5
    variable = mqtt_string("MQTT") + bytes([level, 0x02]) + struct.pack("!H", 60)
    if level == 5:
        variable += b"\x00"  # no properties
    body = variable + mqtt_string(client_id)
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def wait_listening(port, proc):
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the broker exited")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the broker did not listen")


def start(broker, binary, workdir):
    port = free_port()
    if broker == "sessionwire":
        cmd = [binary, "serve", "--listen", "127.0.0.1:0",
               "--mqtt-listen", f"127.0.0.1:{port}", "--ping-period", "0",
               "--max-clients", "20000"]
    else:
        conf = os.path.join(workdir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    "persistence false\nmax_connections -1\nlog_dest stderr\n"
                    "log_type error\n")
        cmd = [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", conf]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc)
    # The probe connection has come and gone.
    time.sleep(0.5)
    return proc, port


def measure(broker, args, workdir):
    proc, port = start(broker, args.binary, workdir)
    clients = []
    try:
        before = memory_kib(proc.pid)
        for i in range(args.clients):
            s = socket.create_connection(("127.0.0.1", port), CONNACK_WAIT_S)
            s.sendall(connect_packet(f"idle-{i}", args.version))
            ack = b""
            while len(ack) < 4:
                chunk = s.recv(4 - len(ack))
                if not chunk:
                    raise RuntimeError(f"{broker} closed client {i}")
                ack += chunk
            if ack[0] != 0x20 or ack[3] != 0:
                raise RuntimeError(f"{broker} refused client {i}: {ack.hex()}")
            clients.append(s)
        time.sleep(SETTLE_S)
        idle = memory_kib(proc.pid)
    finally:
        for s in clients:
            s.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    per = tuple((i - b) * 1024 // args.clients for b, i in zip(before, idle))
    return before, idle, per


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=3000)
    p.add_argument("--version", choices=["311", "5"], default="311")
    p.add_argument("--binary", default="target/release/sessionwire")
    p.add_argument("--brokers", default="sessionwire,mosquitto")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for broker in args.brokers.split(","):
            before, idle, per = measure(broker, args, workdir)
            results[broker] = per
            print(f"{broker}: VmRSS {before[0]} KiB before, {idle[0]} KiB with "
                  f"{args.clients} idle {args.version} clients: {per[0]} B per connection; "
                  f"anonymous (RssAnon) {before[1]} KiB before, {idle[1]} KiB: "
                  f"{per[1]} B per connection")
    if len(results) == 2 and all(results.get("mosquitto", (0, 0))):
        s, m = results["sessionwire"], results["mosquitto"]
        print(f"ratio sessionwire / mosquitto: {s[0] / m[0]:.2f} (VmRSS), "
              f"{s[1] / m[1]:.2f} (anonymous)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
