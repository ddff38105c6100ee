#!/usr/bin/env python3
"""A paho-mqtt 2.x client for the real-client tests (tests/tests/mqtt_clients.rs).

Every mode connects to one broker, does one thing and prints what happened as
JSON lines on stdout, which the Rust test reads:

    sub       subscribe (unless --no-subscribe) and print each message; exits
              after --count messages (0: right after the SUBACK)
    pub       publish --count messages and wait for each to complete
    hold      connect (with a will when --will-topic is given) and stay
              connected until killed or until the broker ends the
              connection, which it reports with the reason code

Each mode is bounded by --timeout seconds (exit code 3 when it runs out).
Connection problems exit with code 2.
"""

import argparse
import json
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def say(**fields):
    print(json.dumps(fields), flush=True)


def code_of(rc):
    return rc.value if hasattr(rc, "value") else int(rc)


def make_client(args):
    v5 = args.version == "5"
    protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    kwargs = {"client_id": args.id or "", "protocol": protocol}
    if args.websocket:
        kwargs["transport"] = "websockets"
    if not v5:
        kwargs["clean_session"] = not args.persistent
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
    state = {"connack": None, "disconnect": None, "messages": [], "suback": None,
             "completed": set()}
    client.user_data_set(state)
    if args.websocket:
        client.ws_set_options(path=args.websocket)

    def on_connect(_c, st, flags, rc, _props):
        st["connack"] = (code_of(rc), bool(flags.session_present))

    def on_disconnect(_c, st, _flags, rc, _props):
        st["disconnect"] = code_of(rc)

    def on_message(_c, st, msg):
        st["messages"].append(msg)
        # paho-mqtt 2.x hands a topic alias set by the broker to the
        # application as it came (an empty topic once the alias is known);
        # it is printed so that the test can see what came.
        alias = getattr(msg.properties, "TopicAlias", None) if msg.properties else None
        say(event="message", topic=msg.topic, payload=msg.payload.decode("utf-8", "replace"),
            qos=msg.qos, retain=bool(msg.retain), dup=bool(msg.dup), alias=alias)

    def on_subscribe(_c, st, _mid, codes, _props):
        st["suback"] = [code_of(c) for c in codes]

    def on_publish(_c, st, mid, _rc, _props):
        st["completed"].add(mid)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    if args.will_topic:
        client.will_set(args.will_topic, args.will_payload, qos=args.qos, retain=False)
    return client, state


def loop_until(client, args, done):
    deadline = time.monotonic() + args.timeout
    while not done():
        if time.monotonic() >= deadline:
            say(event="timeout")
            sys.exit(3)
        client.loop(0.05)


def connect(client, state, args):
    properties = None
    clean_start = True
    if args.version == "5":
        clean_start = not args.persistent
        if args.persistent or args.topic_alias_maximum:
            properties = Properties(PacketTypes.CONNECT)
        if args.persistent:
            properties.SessionExpiryInterval = args.session_expiry
        if args.topic_alias_maximum:
            properties.TopicAliasMaximum = args.topic_alias_maximum
    host, port = args.broker.rsplit(":", 1)
    kwargs = {"keepalive": args.keep_alive}
    if args.version == "5":
        kwargs["clean_start"] = clean_start
        kwargs["properties"] = properties
    client.connect(host, int(port), **kwargs)
    loop_until(client, args, lambda: state["connack"] is not None or state["disconnect"] is not None)
    if state["connack"] is None:
        say(event="refused", disconnect=state["disconnect"])
        sys.exit(2)
    code, present = state["connack"]
    say(event="connected", code=code, session_present=present)
    if code != 0:
        sys.exit(2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["sub", "pub", "hold"])
    p.add_argument("--broker", required=True, help="HOST:PORT")
    p.add_argument("--version", choices=["311", "5"], required=True)
    p.add_argument("--id", default="")
    p.add_argument("--topic", default="t")
    p.add_argument("--qos", type=int, default=0)
    p.add_argument("--message", default="hello")
    p.add_argument("--retain", action="store_true")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--persistent", action="store_true",
                   help="3.1.1: clean session 0; 5.0: clean start 0 and a session expiry")
    p.add_argument("--session-expiry", type=int, default=300)
    p.add_argument("--no-subscribe", action="store_true")
    p.add_argument("--will-topic")
    p.add_argument("--will-payload", default="gone")
    p.add_argument("--keep-alive", type=int, default=60)
    p.add_argument("--topic-alias-maximum", type=int, default=0,
                   help="5.0: the Topic Alias Maximum the CONNECT announces (0: none)")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--websocket", metavar="PATH",
                   help="MQTT over WebSocket at this path (subprotocol mqtt) instead of TCP")
    args = p.parse_args()

    client, state = make_client(args)
    connect(client, state, args)

    if args.mode == "sub":
        if not args.no_subscribe:
            client.subscribe(args.topic, qos=args.qos)
            loop_until(client, args, lambda: state["suback"] is not None)
            say(event="subscribed", codes=state["suback"])
        loop_until(client, args, lambda: len(state["messages"]) >= args.count)
        client.disconnect()
        client.loop(0.1)
    elif args.mode == "pub":
        mids = []
        for i in range(args.count):
            payload = args.message if args.count == 1 else f"{args.message}-{i}"
            info = client.publish(args.topic, payload, qos=args.qos, retain=args.retain)
            mids.append(info.mid)
        loop_until(client, args, lambda: all(m in state["completed"] for m in mids))
        say(event="published", count=len(mids))
        client.disconnect()
        client.loop(0.1)
    elif args.mode == "hold":
        loop_until(client, args, lambda: state["disconnect"] is not None)
        say(event="disconnected", reason_code=state["disconnect"])


if __name__ == "__main__":
    main()
