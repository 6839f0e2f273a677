"""BLE transport: the fragment framing of PROFILE.md sec. 5.

A message crosses the Request characteristic (and leaves on Result and
Challenge notifications) as fragments: 1 header byte (bit 7: last
fragment, bits 0-6: sequence number mod 128, from 0) followed by a chunk
of the message. The lock reassembles at most MAX_MESSAGE (1400) bytes
into one preallocated buffer; a gap, an overflow or a fragment that may
have been cut by the GATT buffer discards the whole message, so nothing
truncated is ever parsed. No radio here: this runs on CPython too.
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
# Why a message was discarded, as the Result's reason text.
FAULTS = ("", "", "fragment_gap", "message_too_long", "fragment_too_long", "fragment_empty")


class Reassembler:
    """One message at a time from Request fragments; no allocation.

    `feed(fragment)` copies the fragment's chunk into the buffer and
    returns MORE, COMPLETE (then `message()` is a memoryview of the whole
    message, valid until the next feed or reset) or a fault (GAP,
    OVERFLOW, CUT, EMPTY) that discarded the message. A write of
    `max_fragment` + 1 bytes or more is CUT: the GATT buffer is one byte
    longer than the largest fragment accepted and the stack cuts longer
    writes to it silently, so such a write may be truncated. After a fault
    the fragments left of that message are dropped quietly (MORE) until
    one with sequence number 0 starts a new message."""

    def __init__(self, size=MAX_MESSAGE, max_fragment=244):
        self.buf = bytearray(size)
        self._mv = memoryview(self.buf)
        self.max_fragment = max_fragment
        self.length = 0
        self.reset()

    def reset(self):
        self.n = 0
        self.seq = 0
        self.skipping = False

    @property
    def active(self):
        """A message is under way (its first fragment came, not its last)."""
        return self.n != 0 or self.seq != 0

    def message(self):
        return self._mv[:self.length]

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
        k = len(frag) - 1
        if self.n + k > len(self.buf):
            return self._fail(h, OVERFLOW)
        self._mv[self.n:self.n + k] = memoryview(frag)[1:]
        self.n += k
        if h & LAST:
            self.length = self.n
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
