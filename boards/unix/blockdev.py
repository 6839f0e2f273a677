"""Board (unix simulator): flash block devices for littlefs, standing in for
the ESP32's `vfs` flash partition.

Both devices implement MicroPython's extended block protocol
(vfs.AbstractBlockDev): readblocks/writeblocks with a byte offset and ioctl
ops 1..6. They behave like NOR flash: erase sets a block to 0xFF and a
program can only clear bits (stored = old & new), so a filesystem that
programmed a region twice without erasing it would show here as on the board.

Parameters mirrored from the ESP32 port: 4096-byte blocks (the flash sector,
esp32.Partition ioctl 5) and littlefs v2 with MicroPython's defaults,
readsize=32, progsize=32, lookahead=32 (ports/esp32/modules/inisetup.py calls
VfsLfs2.mkfs(bdev) and VfsLfs2(bdev) with no options). The prog/erase/read
counters are for the wear and speed figures of bench/bench_declog.py.
"""
import vfs
from micropython import const

_IOCTL_INIT = const(1)
_IOCTL_DEINIT = const(2)
_IOCTL_SYNC = const(3)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_BLOCK_ERASE = const(6)
_EIO = const(5)

BLOCK_SIZE = const(4096)
BLOCKS = const(128)
# The options the ESP32 firmware formats and mounts with (the VfsLfs2 defaults).
LFS_OPTIONS = {"readsize": 32, "progsize": 32, "lookahead": 32}


# Flash is programmed and erased through one small scratch buffer, in
# chunks: the board (esp32.Partition) keeps no copy of a sector in RAM, so
# neither does the simulator, and the lock's heap holds what a board's would.
_CHUNK = const(64)
_FF = b"\xff" * _CHUNK


class _Flash:
    def __init__(self, blocks, block_size):
        self.blocks = blocks
        self.block_size = block_size
        self.reads = 0
        self.progs = 0
        self.prog_bytes = 0
        self.erases = 0
        self._scratch = bytearray(_CHUNK)

    def _span(self, block, offset, n):
        if block < 0 or block >= self.blocks or offset < 0:
            raise OSError(_EIO)
        a = block * self.block_size + offset
        if a + n > self.blocks * self.block_size:
            raise OSError(_EIO)
        return a

    def readblocks(self, block, buf, offset=0):
        a = self._span(block, offset, len(buf))
        self.reads += 1
        self._read(a, buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            # Simple protocol: whole blocks, erased first (as esp32.Partition).
            for i in range(len(buf) // self.block_size):
                self.erase(block + i)
            offset = 0
        self.program(self._span(block, offset, len(buf)), buf)

    def ioctl(self, op, arg):
        if op == _IOCTL_BLOCK_COUNT:
            return self.blocks
        if op == _IOCTL_BLOCK_SIZE:
            return self.block_size
        if op == _IOCTL_BLOCK_ERASE:
            self._span(arg, 0, self.block_size)
            self.erase(arg)
            return 0
        if op == _IOCTL_INIT or op == _IOCTL_DEINIT or op == _IOCTL_SYNC:
            return 0
        return None

    def program(self, addr, data):
        """Program bytes at a flash address (AND into what is there)."""
        self.progs += 1
        self.prog_bytes += len(data)
        mv = memoryview(data)
        scratch = memoryview(self._scratch)
        for i in range(0, len(mv), _CHUNK):
            part = mv[i:i + _CHUNK]
            n = len(part)
            old = scratch[:n]
            self._read(addr + i, old)
            # Programming erased flash (the usual case) stores the data as
            # is; anything else keeps NOR semantics: bits only go 1 -> 0.
            if bytes(old) != _FF[:n]:
                for j in range(n):
                    old[j] &= part[j]
                part = old
            self._write(addr + i, part)

    def erase(self, block, nbytes=None):
        """Erase a block to 0xFF; nbytes < block size models an erase cut short."""
        self.erases += 1
        n = self.block_size if nbytes is None else nbytes
        a = block * self.block_size
        for i in range(0, n, _CHUNK):
            self._write(a + i, _FF[:min(_CHUNK, n - i)])

    def blank(self):
        """True when the superblock area (blocks 0 and 1) was never written."""
        buf = self._scratch
        for a in range(0, 2 * self.block_size, _CHUNK):
            self._read(a, buf)
            if buf != _FF:
                return False
        return True


class RAMBlockDev(_Flash):
    """Flash in a bytearray (`image`, shared, not copied, when given)."""

    def __init__(self, blocks=BLOCKS, block_size=BLOCK_SIZE, image=None):
        _Flash.__init__(self, blocks, block_size)
        if image is None:
            image = bytearray(b"\xff" * (blocks * block_size))
        if len(image) != blocks * block_size:
            raise ValueError("image size")
        self.image = image

    def _read(self, a, buf):
        buf[:] = memoryview(self.image)[a:a + len(buf)]

    def _write(self, a, data):
        self.image[a:a + len(data)] = data


class FileBlockDev(_Flash):
    """Flash in an image file, created erased (all 0xFF) when missing."""

    def __init__(self, path, blocks=BLOCKS, block_size=BLOCK_SIZE):
        _Flash.__init__(self, blocks, block_size)
        size = blocks * block_size
        try:
            f = open(path, "r+b")
        except OSError:
            f = open(path, "w+b")
            chunk = b"\xff" * block_size
            for _ in range(blocks):
                f.write(chunk)
            f.flush()
        if f.seek(0, 2) != size:
            f.close()
            raise ValueError("image is not %d blocks of %d bytes" % (blocks, block_size))
        self._f = f

    def _read(self, a, buf):
        self._f.seek(a)
        if self._f.readinto(buf) != len(buf):
            raise OSError(_EIO)

    def _write(self, a, data):
        self._f.seek(a)
        self._f.write(data)

    # No flush on sync: MicroPython's posix files are unbuffered, so every
    # block write is one write(2) and is in the image once it returns, which
    # is what a power cut (the process killed) keeps, as the ESP32's flash
    # keeps a finished write. Their flush is fsync(2): a host-crash guarantee
    # the model does not need, and one disk flush per record with many locks
    # on one CI disk (a killed simulator then took over 10 s to exit).

    def close(self):
        self._f.close()


def mount(path, mountpoint="/flash", blocks=BLOCKS, block_size=BLOCK_SIZE,
          format_if_needed=True):
    """Mount the littlefs image file `path` at `mountpoint`; returns the
    block device. A blank (never written) image is formatted first when
    format_if_needed; an image that is written but does not mount is never
    formatted (like the ESP32's inisetup, which refuses to wipe it)."""
    bdev = FileBlockDev(path, blocks, block_size)
    try:
        fs = vfs.VfsLfs2(bdev, **LFS_OPTIONS)
    except OSError:
        if not (format_if_needed and bdev.blank()):
            bdev.close()
            raise
        vfs.VfsLfs2.mkfs(bdev, **LFS_OPTIONS)
        fs = vfs.VfsLfs2(bdev, **LFS_OPTIONS)
    vfs.mount(fs, mountpoint)
    bdev.vfs = fs
    return bdev
