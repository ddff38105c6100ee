# Writes corpus/mqtt/: one client stream per row of the rules table in
# docs/mqtt.md, as commented hex text, with the verdict worked out by hand
# from the specifications (the offsets are written as sums of the fields
# before the byte at fault). Run from the repository root:
#   python3 scripts/mqtt-corpus.py
import os
OUT = 'corpus/mqtt'
os.makedirs(OUT, exist_ok=True)

def vbi(n):
    out = []
    while True:
        b = n % 128; n //= 128
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)
def s(x):
    b = x.encode() if isinstance(x, str) else bytes(x)
    return len(b).to_bytes(2, 'big') + b
def pkt(first, body):
    return bytes([first]) + vbi(len(body)) + bytes(body)
def props(p):
    return vbi(len(p)) + bytes(p)

C4 = pkt(0x10, s('MQTT') + bytes([4, 0x02, 0, 60]) + s('c'))          # 15 bytes
C5 = pkt(0x10, s('MQTT') + bytes([5, 0x02, 0, 60]) + props(b'') + s('c'))  # 16 bytes
assert len(C4) == 15 and len(C5) == 16

rows = []   # (name, comment, [(label, bytes)], verdict, reason, offset, messages, code)
def case(name, rule, parts, reason=None, offset=None, code=None):
    n = sum(1 for _ in parts)
    data = b''.join(p for _, p in parts)
    if reason is None:
        rows.append((name, rule, parts, 'accept', '-', '-', len(parts), None))
    else:
        # Packets before the faulty one: those ending at or before offset's packet start.
        # The faulty packet is the last one: the others were decoded.
        before = len(parts) - 1
        rows.append((name, rule, parts, 'close', reason, offset, before, code))

IIM = 'INVALID_INBOUND_MESSAGE'
def c4(label, p): return [('CONNECT 3.1.1, client id "c"', C4), (label, p)]
def c5(label, p): return [('CONNECT 5.0, client id "c"', C5), (label, p)]
def pub5(topic, p=b'', payload=b'', first=0x30):
    return pkt(first, s(topic) + props(p) + payload)

# MQTT-1.5.4-1: a surrogate in a topic name; offset: the 0xed byte.
# C5 (16) + fixed header 2 + length 2 + 'a' 1 = 21.
case('MQTT-1.5.4-1.hex', 'strings are well-formed UTF-8: a surrogate (U+D800) in a topic name',
     c5('PUBLISH QoS 0, topic "a" + ed a0 80', pub5(b'a\xed\xa0\x80')), IIM, 16 + 2 + 2 + 1, 0x81)
case('MQTT-1.5.4-2.hex', 'strings never hold U+0000: a topic name "a\\0b"',
     c4('PUBLISH QoS 0, topic "a\\0b"', pkt(0x30, s(b'a\x00b'))), IIM, 15 + 2 + 2 + 1, 0x81)
case('MQTT-1.5.4-3.hex', 'a byte order mark in a topic name is kept: accepted',
     c5('PUBLISH QoS 0, topic U+FEFF "a"', pub5('\ufeffa')))
case('sec-1.5.4-controls.hex', 'control characters and non-characters are accepted (docs/mqtt.md, Choices)',
     c5('PUBLISH QoS 0, topic "a\\tb" + U+FFFF', pub5('a\tb\uffff')))
# Remaining length 2 in two bytes: 0x82 0x00; offset of the second byte.
case('MQTT-1.5.5-1.hex', 'a variable byte integer is in its shortest form: remaining length 2 as 82 00',
     c4('PINGREQ with remaining length 82 00 (two bytes for 0)', bytes([0xc0, 0x80, 0x00])), IIM, 15 + 2, 0x81)
case('sec-1.5.5-four-bytes.hex', 'a variable byte integer has at most four bytes: remaining length ff ff ff ff 01',
     c4('PUBLISH with a five-byte remaining length', bytes([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])), IIM, 15 + 1, 0x81)
# User property name with U+0000: props = 26, s("k\0"), s("v").
up = bytes([0x26]) + s(b'k\x00') + s('v')
case('MQTT-1.5.7-1.hex', 'both strings of a user property follow the string rules: U+0000 in its name',
     c5('PUBLISH QoS 0, topic "t", user property "k\\0" = "v"', pub5('t', up)),
     # 16 + 2 (fixed) + 3 (topic) + 1 (prop len) + 1 (id) + 2 (len) + 'k' 1
     IIM, 16 + 2 + 3 + 1 + 1 + 2 + 1, 0x81)
case('sec-2.1.2-reserved-type.hex', 'packet type 0 is reserved',
     c4('packet type 0', bytes([0x00, 0x00])), IIM, 15, 0x81)
case('sec-2.1.2-direction.hex', 'a client never sends CONNACK',
     c5('CONNACK from a client', bytes([0x20, 0x03, 0x00, 0x00, 0x00])), IIM, 16, 0x82)
case('MQTT-2.1.3-1.hex', 'fixed-header flags of PUBACK are 0000: 42 instead of 40',
     c4('PUBACK with flags 0010', bytes([0x42, 0x02, 0x00, 0x01])), IIM, 15, 0x81)
case('MQTT-3.6.1-1.hex', 'PUBREL flags are 0010: 60 instead of 62',
     c5('PUBREL with flags 0000', bytes([0x60, 0x02, 0x00, 0x01])), IIM, 16, 0x81)
case('MQTT-3.8.1-1.hex', 'SUBSCRIBE flags are 0010: 80 instead of 82',
     c4('SUBSCRIBE with flags 0000', pkt(0x80, bytes([0, 1]) + s('a') + bytes([0]))), IIM, 15, 0x81)
case('MQTT-3.10.1-1.hex', 'UNSUBSCRIBE flags are 0010: a0 instead of a2',
     c4('UNSUBSCRIBE with flags 0000', pkt(0xa0, bytes([0, 1]) + s('a'))), IIM, 15, 0x81)
case('MQTT-3.14.1-1.hex', 'DISCONNECT flags are 0000: e1',
     c5('DISCONNECT with flags 0001', bytes([0xe1, 0x00])), IIM, 16, 0x81)
# Packet id 0 in a PUBACK: offset of the id (after 2-byte fixed header).
case('MQTT-2.2.1-3.hex', 'a PUBACK carries a non-zero packet identifier',
     c5('PUBACK, packet identifier 0', bytes([0x40, 0x02, 0x00, 0x00])), IIM, 16 + 2, 0x82)
case('MQTT-2.2.1-2.hex', 'a QoS 0 PUBLISH has no packet identifier: the two bytes after the topic are payload',
     c4('PUBLISH QoS 0, topic "a", payload 00 07', pkt(0x30, s('a') + bytes([0, 7]))))
# Declared total 1 + 3 + 32768 > 32768 at the packet's first byte.
case('sec-2.1.4-too-large.hex', 'a packet larger than the maximum (32768 bytes, whole packet) is refused on its fixed header',
     c4('PUBLISH declaring remaining length 32766 (total 32770), body not sent', bytes([0x30, 0xfe, 0xff, 0x01])),
     'MESSAGE_TOO_LARGE', 15, 0x95)
case('sec-2.1.4-trailing.hex', 'the remaining length covers exactly the fields: a PUBACK 3.1.1 with a third byte',
     c4('PUBACK, remaining length 3', bytes([0x40, 0x03, 0x00, 0x01, 0x00])), IIM, 15 + 4, 0x81)
# Property length 5 but only 2 bytes in the packet after it.
case('sec-2.2.2.1-overrun.hex', 'a property length does not run past the packet: 5 declared, 2 left',
     c5('PUBLISH, topic "t", property length 5, then 2 bytes', pkt(0x30, s('t') + bytes([0x05, 0x01, 0x00]))),
     IIM, 16 + 2 + 3, 0x81)
case('sec-2.2.2.2-unknown.hex', 'a property identifier is one 5.0 defines: 0x04',
     c5('PUBLISH, topic "t", property 0x04', pub5('t', bytes([0x04, 0x00]))), IIM, 16 + 2 + 3 + 1, 0x81)
case('sec-2.2.2.2-not-allowed.hex', 'a property is one the packet may carry: session expiry (0x11) in a PUBLISH',
     c5('PUBLISH, topic "t", session expiry interval', pub5('t', bytes([0x11, 0, 0, 0, 1]))), IIM, 16 + 2 + 3 + 1, 0x81)
case('sec-3.x.2-duplicate.hex', 'a property appears at most once: message expiry interval twice',
     c5('PUBLISH, topic "t", message expiry twice', pub5('t', bytes([0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]))),
     IIM, 16 + 2 + 3 + 1 + 5, 0x82)
case('MQTT-3.1.0-1.hex', 'the first packet of a client is CONNECT: a PINGREQ first',
     [('PINGREQ before CONNECT', bytes([0xc0, 0x00]))], IIM, 0, 0x82)
case('MQTT-3.1.0-2.hex', 'a second CONNECT is a protocol error',
     c4('CONNECT again', C4), IIM, 15, 0x82)
# Protocol name "MQTX": offset of the name field (after fixed header 2)?
case('MQTT-3.1.2-1.hex', 'the protocol name is MQTT: "MQTX"',
     [('CONNECT naming "MQTX"', pkt(0x10, s('MQTX') + bytes([4, 0x02, 0, 60]) + s('c')))], IIM, 2, 0x81)
case('MQTT-3.1.2-2.hex', 'the protocol level is 4 or 5: level 6 is refused (CONNACK 0x84; 3.1.1 clients get 0x01)',
     [('CONNECT level 6', pkt(0x10, s('MQTT') + bytes([6, 0x02, 0, 60]) + s('c')))], 'ABORTED', 8, 0x84)
case('MQTT-3.1.2-3.hex', 'the CONNECT reserved flag is 0: flags 03',
     [('CONNECT 5.0, flags 03', pkt(0x10, s('MQTT') + bytes([5, 0x03, 0, 60]) + props(b'') + s('c')))], IIM, 9, 0x81)
case('MQTT-3.1.2-11.hex', 'no will QoS without the will flag: flags 0a (will QoS 1)',
     [('CONNECT 5.0, flags 0a', pkt(0x10, s('MQTT') + bytes([5, 0x0a, 0, 60]) + props(b'') + s('c')))], IIM, 9, 0x81)
will311 = s('w') + s('x')
case('MQTT-3.1.2-12.hex', 'will QoS is not 3: flags 1e',
     [('CONNECT 3.1.1, will QoS 3', pkt(0x10, s('MQTT') + bytes([4, 0x1e, 0, 60]) + s('c') + will311))], IIM, 9, 0x81)
case('MQTT-3.1.2-13.hex', 'no will retain without the will flag: flags 22',
     [('CONNECT 3.1.1, flags 22', pkt(0x10, s('MQTT') + bytes([4, 0x22, 0, 60]) + s('c')))], IIM, 9, 0x81)
# Will flag set but no will topic/payload: client id then end. Missing at the packet end (offset 15).
case('MQTT-3.1.2-9.hex', 'with the will flag, the will topic and payload are present: both missing',
     [('CONNECT 3.1.1, flags 06, nothing after the client id', pkt(0x10, s('MQTT') + bytes([4, 0x06, 0, 60]) + s('c')))], IIM, 15, 0x81)
# User name flag clear, but bytes follow the client id -> trailing bytes.
case('MQTT-3.1.2-16.hex', 'no user name without its flag: a user name after the client id, flag clear',
     [('CONNECT 3.1.1, flags 02, then a user name', pkt(0x10, s('MQTT') + bytes([4, 0x02, 0, 60]) + s('c') + s('u')))], IIM, 15, 0x81)
case('MQTT-3.1.2-17.hex', 'a user name is present with its flag: flags 82 and nothing after the client id',
     [('CONNECT 3.1.1, flags 82, no user name', pkt(0x10, s('MQTT') + bytes([4, 0x82, 0, 60]) + s('c')))], IIM, 15, 0x81)
case('MQTT-3.1.2-22-v311.hex', '3.1.1: no password without a user name: flags 42',
     [('CONNECT 3.1.1, flags 42, password "p"', pkt(0x10, s('MQTT') + bytes([4, 0x42, 0, 60]) + s('c') + s('p')))], IIM, 9, 0x81)
case('MQTT-3.1.3-4.hex', 'the client identifier is a valid string: a lone continuation byte',
     [('CONNECT 3.1.1, client id 80', pkt(0x10, s('MQTT') + bytes([4, 0x02, 0, 60]) + s(b'\x80')))], IIM, 14, 0x81)
case('MQTT-3.1.3-8-v311.hex', '3.1.1: an empty client id needs clean session: refused (CONNACK 0x02)',
     [('CONNECT 3.1.1, flags 00, client id ""', pkt(0x10, s('MQTT') + bytes([4, 0x00, 0, 60]) + s('')))], 'ABORTED', 12, 0x85)
case('MQTT-3.1.3-11.hex', 'the will topic is a topic name: "w/#" has a wildcard',
     [('CONNECT 3.1.1, will topic "w/#"', pkt(0x10, s('MQTT') + bytes([4, 0x06, 0, 60]) + s('c') + s('w/#') + s('x')))], IIM, 19, 0x81)
case('MQTT-3.1.3-12.hex', 'the user name is a valid string: U+0000',
     [('CONNECT 3.1.1, user name "\\0"', pkt(0x10, s('MQTT') + bytes([4, 0x82, 0, 60]) + s('c') + s(b'\x00')))], IIM, 17, 0x81)
case('sec-3.1.2.11-ranges.hex', 'CONNECT receive maximum is not 0',
     [('CONNECT 5.0, receive maximum 0', pkt(0x10, s('MQTT') + bytes([5, 0x02, 0, 60]) + props(bytes([0x21, 0, 0])) + s('c')))], IIM, 13, 0x82)
case('sec-3.1.3.2-will-properties.hex', 'will payload format 1 means a UTF-8 will payload: ff is not',
     [('CONNECT 5.0, will with payload format 1 and payload ff',
       pkt(0x10, s('MQTT') + bytes([5, 0x06, 0, 60]) + props(b'') + s('c') + props(bytes([0x01, 1])) + s('w') + s(b'\xff')))],
     IIM, 24, 0x99)
case('MQTT-3.3.1-2.hex', 'no DUP at QoS 0: first byte 38',
     c4('PUBLISH DUP, QoS 0', pkt(0x38, s('a'))), IIM, 15, 0x81)
case('MQTT-3.3.1-4.hex', 'no QoS 3: first byte 36',
     c4('PUBLISH QoS 3', pkt(0x36, s('a') + bytes([0, 1]))), IIM, 15, 0x81)
case('MQTT-3.3.2-1.hex', 'the topic name is a valid string: an overlong "/" (c0 af)',
     c4('PUBLISH QoS 0, topic c0 af', pkt(0x30, s(b'\xc0\xaf'))), IIM, 15 + 4, 0x81)
case('MQTT-3.3.2-2.hex', 'no wildcards in a topic name: "a/+"',
     c5('PUBLISH QoS 0, topic "a/+"', pub5('a/+')), IIM, 16 + 2 + 2 + 2, 0x81)
case('MQTT-3.3.2-8.hex', 'topic alias 0 is not sent',
     c5('PUBLISH, topic "t", topic alias 0', pub5('t', bytes([0x23, 0, 0]))), IIM, 16 + 2 + 3 + 1, 0x94)
case('sec-3.3.2.1-empty-topic.hex', 'an empty topic name needs a topic alias (5.0)',
     c5('PUBLISH, topic "", no properties', pub5('')), IIM, 16 + 2, 0x82)
case('MQTT-4.7.3-1.hex', 'topic names are not empty (3.1.1)',
     c4('PUBLISH, topic ""', pkt(0x30, s(''))), IIM, 15 + 2, 0x81)
case('MQTT-4.7.3-2.hex', 'no U+0000 in a topic filter',
     c4('SUBSCRIBE, filter "a\\0"', pkt(0x82, bytes([0, 1]) + s(b'a\x00') + bytes([0]))), IIM, 15 + 2 + 2 + 2 + 1, 0x81)
case('MQTT-3.3.2-14.hex', 'no wildcards in a response topic: "r/#"',
     c5('PUBLISH, topic "t", response topic "r/#"', pub5('t', bytes([0x08]) + s('r/#'))), IIM, 16 + 2 + 3 + 1 + 1 + 2 + 2, 0x81)
case('MQTT-3.3.4-6.hex', 'no subscription identifier in a client\'s PUBLISH',
     c5('PUBLISH, topic "t", subscription identifier 1', pub5('t', bytes([0x0b, 1]))), IIM, 16 + 2 + 3 + 1, 0x82)
case('sec-3.3.2.3.2-payload-format.hex', 'payload format indicator is 0 or 1: 2',
     c5('PUBLISH, topic "t", payload format 2', pub5('t', bytes([0x01, 2]))), IIM, 16 + 2 + 3 + 1, 0x82)
case('sec-3.4.2.1-puback-code.hex', 'a PUBACK code is one of the table: 0x01',
     c5('PUBACK, packet identifier 1, code 01', bytes([0x40, 0x03, 0, 1, 0x01])), IIM, 16 + 4, 0x82)
case('sec-3.6.2.1-pubrel-code.hex', 'a PUBREL code is 0x00 or 0x92: 0x10',
     c5('PUBREL, packet identifier 1, code 10', bytes([0x62, 0x03, 0, 1, 0x10])), IIM, 16 + 4, 0x82)
case('MQTT-3.8.3-1.hex', 'a topic filter is a valid string: a surrogate',
     c4('SUBSCRIBE, filter ed a0 80', pkt(0x82, bytes([0, 1]) + s(b'\xed\xa0\x80') + bytes([0]))), IIM, 15 + 2 + 2 + 2, 0x81)
case('MQTT-3.8.3-2.hex', 'a SUBSCRIBE has at least one filter',
     c4('SUBSCRIBE, packet identifier 1, no filter', bytes([0x82, 0x02, 0, 1])), IIM, 15 + 4, 0x82)
case('MQTT-3.8.3-4.hex', 'no No Local on a shared subscription',
     c5('SUBSCRIBE "$share/g/a" with No Local', pkt(0x82, bytes([0, 1]) + props(b'') + s('$share/g/a') + bytes([0x04]))),
     IIM, 16 + 2 + 2 + 1 + 12, 0x82)
case('MQTT-3.8.3-5.hex', 'subscription option reserved bits are 0: bit 6',
     c5('SUBSCRIBE "a", options 40', pkt(0x82, bytes([0, 1]) + props(b'') + s('a') + bytes([0x40]))), IIM, 16 + 2 + 2 + 1 + 3, 0x81)
case('sec-3.8.3.1-retain-handling.hex', 'retain handling is not 3',
     c5('SUBSCRIBE "a", options 30', pkt(0x82, bytes([0, 1]) + props(b'') + s('a') + bytes([0x30]))), IIM, 16 + 2 + 2 + 1 + 3, 0x82)
case('sec-3.8.2.1.2-subscription-id-zero.hex', 'a subscription identifier is not 0',
     c5('SUBSCRIBE "a", subscription identifier 0', pkt(0x82, bytes([0, 1]) + props(bytes([0x0b, 0])) + s('a') + bytes([0]))),
     IIM, 16 + 2 + 2 + 1, 0x82)
case('MQTT-4.7.1-1.hex', '"#" stands alone in the last level: "a/#/b"',
     c4('SUBSCRIBE "a/#/b"', pkt(0x82, bytes([0, 1]) + s('a/#/b') + bytes([0]))), IIM, 15 + 2 + 2 + 2 + 2, 0x81)
case('MQTT-4.7.1-2.hex', '"+" fills a whole level: "a+"',
     c4('SUBSCRIBE "a+"', pkt(0x82, bytes([0, 1]) + s('a+') + bytes([0]))), IIM, 15 + 2 + 2 + 2 + 1, 0x81)
case('MQTT-4.8.2-1.hex', 'a shared subscription has a share name and a filter: "$share/g"',
     c5('SUBSCRIBE "$share/g"', pkt(0x82, bytes([0, 1]) + props(b'') + s('$share/g') + bytes([0]))), IIM, 16 + 2 + 2 + 1 + 2, 0x81)
case('MQTT-4.8.2-2.hex', 'a share name holds no wildcard: "$share/g+/a"',
     c5('SUBSCRIBE "$share/g+/a"', pkt(0x82, bytes([0, 1]) + props(b'') + s('$share/g+/a') + bytes([0]))),
     # A shared subscription's shape is judged on the whole filter: its first byte.
     IIM, 16 + 2 + 2 + 1 + 2, 0x81)
case('MQTT-3.10.3-1.hex', 'an unsubscribe filter is a valid string: ill-formed UTF-8',
     c4('UNSUBSCRIBE, filter ff', pkt(0xa2, bytes([0, 1]) + s(b'\xff'))), IIM, 15 + 2 + 2 + 2, 0x81)
case('MQTT-3.10.3-2.hex', 'an UNSUBSCRIBE has at least one filter',
     c5('UNSUBSCRIBE, packet identifier 1, no filter', bytes([0xa2, 0x03, 0, 1, 0])), IIM, 16 + 5, 0x82)
case('MQTT-3.14.2-1.hex', 'a client DISCONNECT code is one a client may use: 0x8e (session taken over) is the server\'s',
     c5('DISCONNECT, code 8e', bytes([0xe0, 0x01, 0x8e])), IIM, 16 + 2, 0x82)
case('MQTT-3.15.2-1.hex', 'an AUTH code is 0x00, 0x18 or 0x19: 0x01',
     c5('AUTH, code 01, method "m"', pkt(0xf0, bytes([0x01]) + props(bytes([0x15]) + s('m')))), IIM, 16 + 2, 0x82)
case('sec-3.15.2.2.2-auth-method.hex', 'an AUTH with a body names its authentication method',
     c5('AUTH, code 18, no properties', bytes([0xf0, 0x02, 0x18, 0x00])),
     # The property block that lacks the method: its length byte.
     IIM, 16 + 3, 0x82)

for name, rule, parts, verdict, reason, offset, messages, code in rows:
    with open(f'{OUT}/{name}', 'w') as f:
        f.write(f'# {rule}\n')
        for label, p in parts:
            f.write(f'# {label}\n{p.hex(" ")}\n')
with open(f'{OUT}/expected.tsv', 'w') as f:
    f.write('# One client stream per rule of docs/mqtt.md, verdicts written by hand from the\n')
    f.write('# specifications (offsets: the first byte at fault). Files are hex text.\n')
    f.write('# file\tverdict\treason\toffset\tmessages\tlimits\tcode\n')
    for name, rule, parts, verdict, reason, offset, messages, code in rows:
        c = f'0x{code:02x}' if code is not None else '-'
        f.write(f'{name}\t{verdict}\t{reason}\t{offset}\t{messages}\t-\t{c}\n')
print(len(rows))
