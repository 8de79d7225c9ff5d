# SCTP probes for the policy lab. The kernel has no SCTP (CONFIG_IP_SCTP unset) and
# node has no raw sockets, so SCTP reachability is proved with raw packets:
#   send:    from a source pod, SCTP INIT chunks as raw IP protocol 132 (the kernel
#            builds the IP header), each sent a few times (it is a datagram); an IPv6
#            target gets them over IPv6, next header 132 (SCTP's CRC32c covers no
#            pseudo-header, so the packet is the same in both families);
#   capture: in a destination pod, an AF_PACKET socket on eth0 counts the INITs that
#            arrive, by source IP and destination port (IPv4, or with a trailing 6,
#            IPv6: source printed as inet_ntop prints it).
# A probe run picks a random source port as its token, so packets of earlier runs
# are never counted.
#   python3 sctp.py send TOKEN_SPORT COUNT INTERVAL_MS PORT[,PORT...] IP...
#   python3 sctp.py capture TOKEN_SPORT MAX_MS [6]    (prints "ready", then on stdin EOF
#                                                      or MAX_MS: {"ip/port": count, ...})
import json
import os
import select
import socket
import struct
import sys
import time


def crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


TABLE = crc32c_table()


def crc32c(b):
    c = 0xFFFFFFFF
    for x in b:
        c = (c >> 8) ^ TABLE[(c ^ x) & 0xFF]
    return c ^ 0xFFFFFFFF


def init_packet(sport, dport):
    tag = struct.unpack('!I', os.urandom(4))[0] | 1
    # INIT chunk: type 1, flags 0, length 20; initiate tag, a_rwnd, outbound/inbound streams, initial TSN
    chunk = struct.pack('!BBHIIHHI', 1, 0, 20, tag, 65535, 10, 65535, tag)
    hdr = struct.pack('!HHII', sport, dport, 0, 0)
    pkt = hdr + chunk
    # the CRC32c goes on the wire least significant byte first (RFC 4960 appendix B)
    return pkt[:8] + struct.pack('<I', crc32c(pkt)) + pkt[12:]


def send(argv):
    sport, count, interval = int(argv[0]), int(argv[1]), int(argv[2]) / 1000.0
    ports = [int(p) for p in argv[3].split(',')]
    ips = argv[4:]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 132) if any(':' in ip for ip in ips) else None
    for k in range(count):
        for ip in ips:
            for port in ports:
                try:
                    (s6 if ':' in ip else s).sendto(init_packet(sport, port), (ip, 0))
                except OSError:
                    pass
        if k + 1 < count:
            time.sleep(interval)


def capture(argv):
    sport, max_ms = int(argv[0]), int(argv[1])
    six = len(argv) > 2 and argv[2] == '6'
    ethertype = 0x86DD if six else 0x0800
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
    s.bind(('eth0', ethertype))
    seen = {}
    print('ready', flush=True)
    deadline = time.monotonic() + max_ms / 1000.0
    stdin = sys.stdin.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([s, stdin], [], [], left)
        if stdin in r:
            if not os.read(stdin, 4096):
                break
        if s in r:
            frame, addr = s.recvfrom(65535)
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            ip = frame[14:]
            if six:
                # fixed header only: an INIT sent by `send` carries no extension headers
                if len(ip) < 40 or ip[0] >> 4 != 6 or ip[6] != 132:
                    continue
                l4 = ip[40:]
                src = socket.inet_ntop(socket.AF_INET6, ip[8:24])
            else:
                if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 132:
                    continue
                l4 = ip[(ip[0] & 0x0F) * 4:]
                src = socket.inet_ntoa(ip[12:16])
            if len(l4) < 16:
                continue
            src_port, dst_port = struct.unpack('!HH', l4[:4])
            if src_port != sport or l4[12] != 1:  # our token, an INIT chunk
                continue
            key = '%s/%d' % (src, dst_port)
            seen[key] = seen.get(key, 0) + 1
    print(json.dumps(seen), flush=True)


if __name__ == '__main__':
    {'send': send, 'capture': capture}[sys.argv[1]](sys.argv[2:])
