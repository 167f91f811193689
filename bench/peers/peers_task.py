"""The task every engine runs for one DAG node (Stratus runs the Rust `bench`
function, which does the same): touch `memory_mb` MiB, busy-loop
`duration_ms`, receive the inputs' bytes, return `output_bytes` bytes."""

import time


def bench_task(duration_ms, memory_mb, output_bytes, *inputs):
    received = 0
    for x in inputs:
        received += len(x)
    mem = None
    if memory_mb > 0:
        mem = bytearray(memory_mb << 20)  # calloc'd: pages are not resident yet
        mem[::4096] = b"\x01" * len(range(0, len(mem), 4096))  # one write per 4 KiB page
    if duration_ms > 0:
        end = time.perf_counter() + duration_ms / 1000.0
        while time.perf_counter() < end:
            pass
    del mem
    return b"x" * output_bytes
