"""A runaway stdout burst, held in 40 KB: the head+tail buffer at work.

    python examples/buffer_demo.py
"""

from journal import HeadTailBuffer
from journal.buffer import IMPLEMENTATION

buf = HeadTailBuffer(head=20_000, tail=20_000)
line = b"compiling module %06d ... ok\n"
for number in range(400_000):  # about 12 MB of build output
    buf.append(line % number)
buf.append(b"error: linking failed with exit code 1\n")

print(f"implementation: {IMPLEMENTATION}")
print(f"written {buf.total:,} bytes, held {len(buf):,}, dropped {buf.dropped:,}")
lines = buf.text().splitlines()
marker = next(n for n, text in enumerate(lines) if "omitted" in text)
print("\n".join(lines[:2] + ["  ..."] + lines[marker - 1 : marker + 3] + ["  ..."] + lines[-2:]))
