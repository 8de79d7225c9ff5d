{
  "targets": [{
    "target_name": "twill_native",
    "sources": ["src/addon.c", "src/tun.c", "src/afpacket.c", "src/udp.c", "src/poll.c", "src/netns.c", "src/cpu.c"],
    "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"],
    "ldflags": ["-pthread"]
  }]
}
