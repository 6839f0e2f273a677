"""The simulated board's set-up, run once by standin.py and dropped: the
arguments, the littlefs image mounted at / in place of the host's
filesystem (formatted when blank, as inisetup.py does), machine with its
resets, sys.path. Leaves "mode" in its globals for standin.py.
"""
import sys
import vfs

import blockdev


def _args():
    a = {"flash": None, "mode": "power", "firmware": "frozen", "blocks": str(blockdev.BLOCKS)}
    argv = sys.argv
    i = 1
    while i + 1 < len(argv) and argv[i][2:] in a:
        a[argv[i][2:]] = argv[i + 1]
        i += 2
    if i != len(argv) or not a["flash"]:
        print("usage: standin.py --flash IMAGE [--mode power|raw] [--firmware frozen|lib] [--blocks N]")
        sys.exit(2)
    return a


def _mount(path, blocks):
    bdev = blockdev.FileBlockDev(path, blocks)
    try:
        fs = vfs.VfsLfs2(bdev, **blockdev.LFS_OPTIONS)
    except OSError:
        if not bdev.blank():
            print("flash: %s is written but does not mount as littlefs; left as is" % path)
            return False
        print("flash: blank, formatting littlefs (%d blocks of %d bytes)" % (blocks, blockdev.BLOCK_SIZE))
        vfs.VfsLfs2.mkfs(bdev, **blockdev.LFS_OPTIONS)
        fs = vfs.VfsLfs2(bdev, **blockdev.LFS_OPTIONS)
    vfs.umount("/")
    vfs.mount(fs, "/")
    return True


a = _args()
src.close()  # noqa: F821 (given by standin.py)
if _mount(a["flash"], int(a["blocks"])):
    import os
    os.chdir("/")
sys.modules["machine"] = Machine()  # noqa: F821 (given by standin.py)
if a["firmware"] == "lib":
    # asyncio is the port's (frozen); the lock is whatever /lib holds.
    import asyncio
    import asyncio.core, asyncio.funcs, asyncio.event, asyncio.lock, asyncio.stream  # noqa
    sys.path[:] = ["", "/lib"]
else:
    sys.path[:] = ["", ".frozen", "/lib"]
mode = a["mode"]
