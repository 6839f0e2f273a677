"""BLE transport: the fragment framing of PROFILE.md sec. 5.

A message crosses the Request characteristic (and leaves on Result and
Challenge notifications) as fragments: 1 header byte (bit 7: last
fragment, bits 0-6: sequence number mod 128, from 0) followed by a chunk
of the message. The lock reassembles at most MAX_MESSAGE (1400) bytes
into five preallocated 280-byte chunks; a gap, an overflow or a fragment
that may have been cut by the GATT buffer discards the whole message, so
nothing truncated is ever parsed. No radio here: this runs on CPython too.
"""
from micropython import const

MAX_MESSAGE = const(1400)
LAST = const(0x80)
_SEQ = const(0x7F)

# What Reassembler.feed returns.
MORE = const(0)       # more fragments to come (or the rest of a discarded message)
COMPLETE = const(1)   # the message is whole: message()
GAP = const(2)        # a sequence number other than the next: discarded
OVERFLOW = const(3)   # over MAX_MESSAGE bytes: discarded
CUT = const(4)        # a write that filled the GATT buffer (maybe cut): discarded
EMPTY = const(5)      # an empty write: discarded
NOMEM = const(6)      # no heap for the next chunk of a long message: discarded
# Why a message was discarded, as the Result's reason text.
FAULTS = ("", "", "fragment_gap", "message_too_long", "fragment_too_long", "fragment_empty", "no_memory")
# Bytes of a reassembly chunk: five make MAX_MESSAGE, and one lent (below)
# leaves a hole that takes a 264-byte buffer of the P-256 verify.
CHUNK = const(280)


class Reassembler:
    """One message at a time from Request fragments, in fixed chunks.

    `feed(fragment)` copies the fragment's chunk into the message and
    returns MORE, COMPLETE (the message is then read in place: `length`,
    `byte(i)`, `part(a, b)`; valid until the next feed, reset or restore) or
    a fault (GAP, OVERFLOW, CUT, EMPTY, NOMEM) that discarded the message.
    A write of `max_fragment` + 1 bytes or more is CUT: the GATT buffer is
    one byte longer than the largest fragment accepted and the stack cuts
    longer writes to it silently, so such a write may be truncated. After
    a fault the fragments left of that message are dropped quietly (MORE)
    until one with sequence number 0 starts a new message.

    The message lives in CHUNK-byte buffers, never one large block: on a
    fragmented heap a block of 1400 bytes may not be found when one of 280
    is. `keep` chunks (all five by default) are allocated once and reused.
    While a whole message is decided, `lend()` gives the heap back the
    chunks it does not use (a Request with a full token uses two, with a
    token id one): the verification's larger buffers find their room, and
    `restore()` takes them back after. A chunk that could not be taken
    back is taken when a message reaches it (NOMEM when the heap has none:
    that message is discarded, not truncated)."""

    def __init__(self, size=MAX_MESSAGE, max_fragment=244, keep=5):
        self.size = size
        self.max_fragment = max_fragment
        self.keep = keep
        self.chunks = [memoryview(bytearray(CHUNK)) for _ in range(keep)]
        self.length = 0
        self.reset()

    def reset(self):
        self.n = 0
        self.seq = 0
        self.skipping = False

    def lend(self):
        """Drop the chunks the whole message does not use: on a fragmented
        heap their room is what a decision finds whole (restore() takes
        them back)."""
        del self.chunks[(self.length + CHUNK - 1) // CHUNK:]

    def restore(self):
        """`keep` chunks again: those taken beyond it dropped, those lent
        allocated anew (as many as the heap gives; feed takes the rest when
        a message needs them)."""
        chunks = self.chunks
        del chunks[self.keep:]
        try:
            while len(chunks) < self.keep:
                chunks.append(memoryview(bytearray(CHUNK)))
        except MemoryError:
            pass

    @property
    def active(self):
        """A message is under way (its first fragment came, not its last)."""
        return self.n != 0 or self.seq != 0

    def byte(self, i):
        """Byte `i` of the message (an int)."""
        c = i // CHUNK
        return self.chunks[c][i - c * CHUNK]

    def part(self, a, b):
        """Bytes `a` to `b` of the message: a memoryview into its chunk,
        or, when they span chunks, a bytearray of their own."""
        if a >= b:
            return b""
        c = a // CHUNK
        off = a - c * CHUNK
        if (b - 1) // CHUNK == c:
            return self.chunks[c][off:off + b - a]
        out = bytearray(b - a)
        i = a
        while i < b:
            c = i // CHUNK
            off = i - c * CHUNK
            k = min(CHUNK - off, b - i)
            out[i - a:i - a + k] = self.chunks[c][off:off + k]
            i += k
        return out

    def message(self):
        """The whole message, as part() gives it."""
        return self.part(0, self.length)

    def feed(self, frag):
        if not len(frag):
            self.reset()
            return EMPTY
        h = frag[0]
        if self.skipping:
            if h & _SEQ:
                return MORE  # the rest of a discarded message
            self.skipping = False
        if len(frag) > self.max_fragment:
            return self._fail(h, CUT)
        if h & _SEQ != self.seq:
            return self._fail(h, GAP)
        k = len(frag)
        n = self.n
        if n + k - 1 > self.size:
            return self._fail(h, OVERFLOW)
        src = memoryview(frag)
        chunks = self.chunks
        i = 1
        while i < k:
            c = n // CHUNK
            if c == len(chunks):
                try:
                    chunks.append(memoryview(bytearray(CHUNK)))
                except MemoryError:
                    return self._fail(h, NOMEM)
            off = n - c * CHUNK
            m = min(CHUNK - off, k - i)
            chunks[c][off:off + m] = src[i:i + m]
            i += m
            n += m
        self.n = n
        if h & LAST:
            self.length = n
            self.n = 0
            self.seq = 0
            return COMPLETE
        self.seq = (self.seq + 1) & _SEQ
        return MORE

    def _fail(self, header, fault):
        self.reset()
        self.skipping = not header & LAST
        return fault


def fragments(msg, payload):
    """The fragments of `msg` for an ATT payload of `payload` bytes (MTU - 3,
    at least 2): a list of bytes, the last with bit 7 set."""
    step = payload - 1
    out = []
    seq = 0
    i = 0
    while True:
        chunk = msg[i:i + step]
        i += step
        last = i >= len(msg)
        out.append(bytes((seq | (LAST if last else 0),)) + chunk)
        if last:
            return out
        seq = (seq + 1) & _SEQ
