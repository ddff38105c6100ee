#!/usr/bin/env python3
"""Record the raw bytes real MQTT clients send, one file per client run.

A minimal MQTT peer listens on 127.0.0.1 (a free port per run), answers every
packet a client sends the way a broker would (CONNACK, SUBACK, PUBACK, PUBREC,
PUBCOMP, UNSUBACK, PINGRESP) and writes everything the client sent, byte for
byte, to OUTDIR/<client>-<version>-<what>.bin. It stores no state beyond one
connection and forwards nothing: it is a recorder, not a broker.

Clients: mosquitto_pub and mosquitto_sub (Debian's mosquitto-clients) and the
paho-mqtt library (PyPI), run as child processes. This script itself uses the
standard library only.

    python3 scripts/mqtt-capture.py --all OUTDIR      # every run below
    python3 scripts/mqtt-capture.py --list            # run names
    python3 scripts/mqtt-capture.py OUTDIR NAME...    # chosen runs
    python3 scripts/mqtt-capture.py --broker-check DIR  # replay DIR/*.bin into mosquitto
"""

import argparse
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

TIMEOUT = 10.0
QUIET = 0.5

CONNECT, PUBLISH, PUBREL, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 1, 3, 6, 8, 10, 12, 14
NAMES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
    7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
    12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH",
}


def vbi_encode(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def vbi_decode(buf, pos):
    """Value and end of the variable byte integer at pos, or None if incomplete."""
    value, shift = 0, 0
    for i in range(4):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise ValueError("variable byte integer longer than 4 bytes")


def split(buf):
    """Complete packets at the start of buf as (type, flags, body), and the rest."""
    packets, pos = [], 0
    while pos < len(buf):
        length = vbi_decode(buf, pos + 1)
        if length is None or length[1] + length[0] > len(buf):
            break
        size, body_at = length
        packets.append((buf[pos] >> 4, buf[pos] & 0x0F, bytes(buf[body_at:body_at + size])))
        pos = body_at + size
    return packets, buf[pos:]


def packet(first, body):
    return bytes([first]) + vbi_encode(len(body)) + body


def suback_codes(body, v5):
    """Granted QoS of each filter of a SUBSCRIBE body (packet id already removed)."""
    pos = 0
    if v5:
        size, pos = vbi_decode(body, 0)
        pos += size
    codes = bytearray()
    while pos < len(body):
        size = int.from_bytes(body[pos:pos + 2], "big")
        pos += 2 + size
        codes.append(body[pos] & 0x03)
        pos += 1
    return bytes(codes)


def unsuback_count(body, v5):
    pos, count = 0, 0
    if v5:
        size, pos = vbi_decode(body, 0)
        pos += size
    while pos < len(body):
        pos += 2 + int.from_bytes(body[pos:pos + 2], "big")
        count += 1
    return count


class Peer:
    """What a broker would answer to each packet of one client connection."""

    def __init__(self, deliver):
        self.v5 = False
        self.deliver = deliver
        self.subscribed = False

    def delivery(self):
        """A QoS 0 PUBLISH to the delivery topic, once, after a SUBSCRIBE."""
        if not (self.deliver and self.subscribed):
            return b""
        topic, self.deliver = self.deliver.encode(), None
        publish = len(topic).to_bytes(2, "big") + topic + (b"\x00" if self.v5 else b"")
        return packet(0x30, publish + b"hello")

    def answer(self, kind, flags, body):
        if kind == CONNECT:
            level = body[2 + int.from_bytes(body[0:2], "big")]
            self.v5 = level == 5
            return packet(0x20, b"\x00\x00\x00" if self.v5 else b"\x00\x00")
        if kind == PUBLISH:
            qos = (flags >> 1) & 0x03
            if qos == 0:
                return b""
            topic_end = 2 + int.from_bytes(body[0:2], "big")
            pid = body[topic_end:topic_end + 2]
            return packet(0x40 if qos == 1 else 0x50, pid)
        if kind == PUBREL:
            return packet(0x70, body[0:2])
        if kind == SUBSCRIBE:
            pid, rest = body[0:2], body[2:]
            self.subscribed = True
            return packet(0x90, pid + (b"\x00" if self.v5 else b"") + suback_codes(rest, self.v5))
        if kind == UNSUBSCRIBE:
            pid, rest = body[0:2], body[2:]
            if self.v5:
                return packet(0xB0, pid + b"\x00" + b"\x00" * unsuback_count(rest, True))
            return packet(0xB0, pid)
        if kind == PINGREQ:
            return packet(0xD0, b"")
        return b""


def record(argv, deliver=None):
    """Run one client against the peer; return the bytes it sent and its packet types."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(TIMEOUT)
    port = server.getsockname()[1]
    child = subprocess.Popen(
        [a.replace("{port}", str(port)) for a in argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    captured, pending, kinds = bytearray(), bytearray(), []
    peer = Peer(deliver)
    try:
        conn, _ = server.accept()
        conn.settimeout(TIMEOUT)
        with conn:
            done = False
            while not done:
                # Deliver only once the client is quiet, so that it has sent
                # everything (an UNSUBSCRIBE too) before it gets its message.
                if peer.deliver and peer.subscribed and not select.select([conn], [], [], QUIET)[0]:
                    conn.sendall(peer.delivery())
                chunk = conn.recv(65536)
                if not chunk:
                    break
                captured += chunk
                pending += chunk
                packets, pending = split(pending)
                for kind, flags, body in packets:
                    kinds.append(NAMES.get(kind, str(kind)))
                    try:
                        conn.sendall(peer.answer(kind, flags, body))
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client has gone; what it sent is still recorded
                    done = done or kind == DISCONNECT
    finally:
        server.close()
        try:
            _, err = child.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            _, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {child.returncode}: {err.decode(errors='replace')}")
    if pending:
        raise RuntimeError(f"{len(pending)} bytes of an incomplete packet at the end")
    return bytes(captured), kinds


PAHO = r"""
import sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

port, version = int(sys.argv[1]), sys.argv[2]
v5 = version == "5"
client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2,
    client_id="paho-" + version,
    protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
)
events = {name: threading.Event() for name in ("connect", "subscribe", "unsubscribe")}
client.on_connect = lambda *a: events["connect"].set()
client.on_subscribe = lambda *a: events["subscribe"].set()
client.on_unsubscribe = lambda *a: events["unsubscribe"].set()
client.username_pw_set("paho-user", "paho-secret")

def wait(name):
    if not events[name].wait(10):
        sys.exit("no answer to " + name)

if v5:
    will = Properties(PacketTypes.WILLMESSAGE)
    will.WillDelayInterval = 30
    will.ContentType = "text/plain"
    client.will_set("status/paho", b"gone", qos=1, retain=True, properties=will)
    connect = Properties(PacketTypes.CONNECT)
    connect.SessionExpiryInterval = 3600
    connect.ReceiveMaximum = 20
    connect.UserProperty = ("site", "capture")
    client.connect("127.0.0.1", port, keepalive=30, clean_start=True, properties=connect)
else:
    client.will_set("status/paho", b"gone", qos=1, retain=True)
    client.connect("127.0.0.1", port, keepalive=30)
client.loop_start()
wait("connect")

if v5:
    subscribe = Properties(PacketTypes.SUBSCRIBE)
    subscribe.SubscriptionIdentifier = 7
    client.subscribe([
        ("a/+", SubscribeOptions(qos=0, noLocal=True)),
        ("b/#", SubscribeOptions(qos=1, retainAsPublished=True)),
        ("c/d", SubscribeOptions(qos=2, retainHandling=2)),
    ], properties=subscribe)
else:
    client.subscribe([("a/+", 0), ("b/#", 1), ("c/d", 2)])
wait("subscribe")

for qos in (0, 1, 2):
    properties = None
    if v5:
        properties = Properties(PacketTypes.PUBLISH)
        properties.MessageExpiryInterval = 60
        properties.ContentType = "application/json"
        properties.ResponseTopic = "reply/paho"
        properties.CorrelationData = b"\x01\x02"
        properties.UserProperty = ("k", "v")
    info = client.publish("t/qos%d" % qos, b'{"n":%d}' % qos, qos=qos, properties=properties)
    info.wait_for_publish(10)

client.unsubscribe(["a/+", "b/#"])
wait("unsubscribe")
client.disconnect()
client.loop_stop()
"""


def mosquitto(tool, version, client_id, *args):
    return [tool, "-h", "127.0.0.1", "-p", "{port}", "-V", version, "-i", client_id, *args]


def runs():
    """Every capture as name -> (argv, topic delivered after SUBACK or None)."""
    table = {}
    for version, tag in (("mqttv311", "311"), ("mqttv5", "5")):
        pub = lambda what, *args: mosquitto(  # noqa: E731
            "mosquitto_pub", version, f"pub-{tag}-{what}", "-t", "sensors/t1", *args
        )
        for qos in ("0", "1", "2"):
            table[f"mosquitto_pub-{tag}-qos{qos}"] = (pub(f"qos{qos}", "-q", qos, "-m", "21.5"), None)
        table[f"mosquitto_pub-{tag}-retained"] = (pub("retained", "-r", "-q", "1", "-m", "on"), None)
        table[f"mosquitto_pub-{tag}-will"] = (pub(
            "will", "-m", "up", "--will-topic", "status/pub", "--will-payload", "down",
            "--will-qos", "1", "--will-retain",
        ), None)
        table[f"mosquitto_pub-{tag}-userpass"] = (pub(
            "userpass", "-u", "alice", "-P", "s3cret", "-q", "1", "-m", "x",
        ), None)
        sub = ["mosquitto_sub", "-h", "127.0.0.1", "-p", "{port}", "-V", version,
               "-i", f"sub-{tag}", "-C", "1", "-q", "1", "-t", "a/+", "-t", "b/#", "-t", "c/d/e"]
        table[f"mosquitto_sub-{tag}-filters"] = (sub + ["-U", "c/d/e"], "a/x")
        table[f"paho-{tag}-session"] = ([sys.executable, "-c", PAHO, "{port}", tag], None)
    table["mosquitto_pub-5-properties"] = (mosquitto(
        "mosquitto_pub", "mqttv5", "pub-5-properties", "-t", "sensors/t1", "-q", "1", "-m", "{}",
        "-D", "connect", "session-expiry-interval", "120",
        "-D", "connect", "receive-maximum", "10",
        "-D", "connect", "user-property", "site", "lab",
        "-D", "publish", "user-property", "k", "v",
        "-D", "publish", "message-expiry-interval", "300",
        "-D", "publish", "content-type", "application/json",
        "-D", "publish", "response-topic", "reply/t1",
        "-D", "publish", "correlation-data", "abc123",
        "-D", "publish", "payload-format-indicator", "1",
    ), None)
    table["mosquitto_sub-5-options"] = ([
        "mosquitto_sub", "-h", "127.0.0.1", "-p", "{port}", "-V", "mqttv5", "-i", "sub-5-options",
        "-C", "1", "-q", "2", "--retain-as-published", "-t", "a/+", "-t", "b/#",
        "-D", "subscribe", "subscription-identifier", "42",
        "-D", "connect", "session-expiry-interval", "60",
    ], "b/x/y")
    return table


def broker_check(directory):
    """Replay every capture of directory into a real mosquitto broker on
    127.0.0.1 and read its log: each connection must end with the client's
    own DISCONNECT, not with the broker refusing a packet. Returns failures."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)  # started as root, mosquitto writes its log as user mosquitto
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        log = os.path.join(tmp, "mosquitto.log")
        conf = os.path.join(tmp, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    f"log_dest file {log}\nlog_type all\npersistence false\n")
        broker = subprocess.Popen(["mosquitto", "-c", conf],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        failures = 0
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                raise RuntimeError("mosquitto did not start listening")
            for name in sorted(n for n in os.listdir(directory) if n.endswith(".bin")):
                with open(os.path.join(directory, name), "rb") as f:
                    data = f.read()
                start = os.path.getsize(log)
                with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as conn:
                    try:
                        conn.sendall(data)
                        while conn.recv(65536):
                            pass  # the broker closes after the DISCONNECT
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # refused: the log says why
                time.sleep(0.2)
                with open(log, errors="replace") as f:
                    f.seek(start)
                    lines = f.read()
                clean = "Received DISCONNECT" in lines and not any(
                    word in lines for word in ("protocol error", "malformed", "disconnected due to"))
                failures += not clean
                print(f"{name}\t{'clean DISCONNECT' if clean else 'REFUSED'}")
                if not clean:
                    print(lines)
        finally:
            broker.terminate()
            broker.wait(timeout=TIMEOUT)
        return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="run every capture")
    parser.add_argument("--list", action="store_true", help="print the run names and exit")
    parser.add_argument("--broker-check", metavar="DIR",
                        help="replay DIR/*.bin into mosquitto and report how each ended")
    parser.add_argument("outdir", nargs="?")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    table = runs()
    if args.broker_check:
        return 1 if broker_check(args.broker_check) else 0
    if args.list:
        print("\n".join(sorted(table)))
        return 0
    if not args.outdir or not (args.all or args.names):
        parser.error("give OUTDIR and --all or run names")
    chosen = sorted(table) if args.all else args.names
    os.makedirs(args.outdir, exist_ok=True)
    for name in chosen:
        argv, deliver = table[name]
        data, kinds = record(argv, deliver)
        with open(os.path.join(args.outdir, name + ".bin"), "wb") as out:
            out.write(data)
        print(f"{name}.bin\t{len(data)} bytes\t{len(kinds)} packets\t{' '.join(kinds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
