"""A simulated lock in a real `micropython` process, for end-to-end tests.

Provisions a bundle with lockctl, starts boards/unix/main.py on a free UDP
port, and collects what the lock prints (READY, EVENT lines) so tests can
watch the door. The flash image survives restarts of the same SimLock.
"""
import json
import os
import socket
import subprocess
import threading
import time

import cbor2

from coap import message as cm
from lockctl import cose_host as ch
from lockctl.cli import sim_command, sim_env
from lockctl.provision import load_bundle, provision
from tokencases import with_overrides


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class SimLock:
    def __init__(self, tmpdir, device_id="lock-1", relock_ms=1500, heapsize=None, config=None, mpypath=None,
                 start=True, coaps=False, ble=False, grow=None, bundle=None, **prov):
        """`start=False`: provision the bundle (and mint tokens for it) but
        start no process; `start()` starts it later. `coaps`: also serve
        CoAPS (DTLS) on a free port (`coaps_port`); off by default, so
        parallel locks never share 5684. `grow`: bytes of system heap the GC
        heap may grow into (None: the ESP32 model, interp.ESP32_HEAP_GROW_BYTES;
        0: the initial heap is all; a growth is said: `grew()`). `ble`: also serve BLE, on a virtual
        controller pair of its own (lockctl.blelink: the lock's controller on
        a pty, phones at tcp-client:127.0.0.1:`ble_port`, `ble_transport`)."""
        self.dir = str(tmpdir)
        if bundle is not None:
            # A bundle made elsewhere (e.g. by the bench AS), used as it is:
            # its ports, its AS (no key here to mint with: as_key None).
            self.bundle = bundle
            self.cfg, self.as_key = load_bundle(bundle)
            self.port = self.cfg["coap"]["port"]
            self.coaps_port = self.cfg["coaps"]["port"] if self.cfg["coaps"].get("enabled", True) else None
            device_id = self.cfg["device_id"]
            self._init_rest(device_id, heapsize, mpypath, grow, ble, start)
            return
        self.bundle = os.path.join(self.dir, "bundle")
        self.port = free_udp_port()
        self.coaps_port = free_udp_port() if coaps else None
        provision(self.bundle, device_id, coap_port=self.port, plain_coap=True, bind="127.0.0.1",
                  clock="system", relock_ms=relock_ms, say=lambda *a: None, **prov)
        self.cfg, self.as_key = load_bundle(self.bundle)
        if config:
            self.cfg.update(config)
            self.cfg["coap"] = dict(self.cfg["coap"], port=self.port)
        # config may set the DTLS table ("sessions", "idle_s", "handshake_s").
        self.cfg["coaps"] = dict(self.cfg["coaps"], enabled=bool(coaps), port=self.coaps_port or 5684)
        if ble:
            self.cfg["ble"] = dict(self.cfg.get("ble", {}), enabled=True)
        with open(os.path.join(self.bundle, "lock.json"), "w") as f:
            json.dump(self.cfg, f, indent=2)
        self._init_rest(device_id, heapsize, mpypath, grow, ble, start)

    def _init_rest(self, device_id, heapsize, mpypath, grow, ble, start):
        self.link = None
        if ble:
            from lockctl.ble import start_link
            self.link, self.ble_pty, self.ble_port = start_link(os.path.join(self.dir, "hci"), 0)
            self.ble_transport = "tcp-client:127.0.0.1:%d" % self.ble_port
        self.device_id = device_id
        self.kid = bytes.fromhex(self.cfg["as_keys"][0]["kid"])
        self.issuer = self.cfg["as_keys"][0]["issuer"]
        self.flash = os.path.join(self.dir, "flash.img")
        self.heapsize = heapsize
        self.grow = grow
        self.mpypath = mpypath
        self.proc = None
        self.lines = []
        if start:
            self.start()

    def start(self, timeout=20, presence=False):
        """`presence`: the pairing button held at boot (main.py --presence)."""
        cmd = sim_command(self.bundle, self.flash, ("--presence",) if presence else (), heapsize=self.heapsize)
        self.lines = []
        env = sim_env()
        if self.grow is not None:
            env["MICROPY_SIM_HEAP_GROW"] = str(self.grow)
        if self.mpypath:
            env["MICROPYPATH"] = self.mpypath
        if self.link:
            env["MICROPYBTUART"] = self.ble_pty
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                     text=True, bufsize=1)
        # The reader keeps its own process and list: a killed process's last
        # lines (an old READY among them) never land in the new list.
        self._reader = threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True)
        self._reader.start()
        self.wait_for("READY", timeout)

    @staticmethod
    def _read(proc, lines):
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    def wait_for(self, text, timeout=10, start=0):
        end = time.time() + timeout
        while time.time() < end:
            for line in self.lines[start:]:
                if text in line:
                    return line
            if self.proc.poll() is not None and not any(text in l for l in self.lines[start:]):
                time.sleep(0.2)
                raise AssertionError("lock exited (%s) before %r:\n%s" % (self.proc.returncode, text, self.output()))
            time.sleep(0.02)
        raise AssertionError("timeout waiting for %r:\n%s" % (text, self.output()))

    def grew(self):
        """The simulator's lines saying the GC heap took an area from the
        system heap (the board would grow its heap there)."""
        return [l for l in self.lines if l.startswith("SIM heap: area") and "added" in l]

    def events(self):
        return [l[6:] for l in self.lines if l.startswith("EVENT ")]

    def output(self):
        return "\n".join(self.lines[-60:])

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc:
            self._reader.join(10)

    def restart(self):
        self.kill()
        self.start()

    def stop(self):
        self.kill()
        if self.link and self.link.poll() is None:
            self.link.kill()
            self.link.wait(10)

    # Tokens -------------------------------------------------------------
    def claims(self, over=None, client=None):
        now = int(time.time())
        c = {1: self.issuer, 3: self.device_id, 4: now + 3600, 6: now, 7: os.urandom(8), 9: "unlock lock status"}
        if client is not None:
            c[8] = {1: ch.cose_key_ec2(client)}
        return with_overrides(c, over)

    def token(self, client=None, over=None, **kw):
        return ch.make_sign1(self.claims(over, client), self.as_key, kid=self.kid, **kw)


class RawClient:
    """A minimal CoAP client on a plain UDP socket (no library overhead in
    the measured path)."""

    def __init__(self, port, host=None):
        """`host`: a loopback source address (127.x.y.z) to send from, so
        one test can be many peers."""
        self.addr = ("127.0.0.1", port)
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if host:
            self.s.bind((host, 0))
        self.s.settimeout(10)
        self.mid = int.from_bytes(os.urandom(2), "big")  # as a real client: no MID reuse across sockets

    def request(self, code, path, options=(), payload=b"", retransmit=0):
        """One CON exchange; `retransmit`: how many times the same message
        is sent again after 2 s without an answer (RFC 7252 sec. 4.2)."""
        self.mid = (self.mid + 1) & 0xFFFF
        msg = cm.Message(cm.CON, code, self.mid, self.mid.to_bytes(2, "big"), payload=payload)
        for seg in path.split("/"):
            msg.add(cm.URI_PATH, seg.encode())
        for num, val in options:
            msg.add(num, val)
        raw = cm.serialize(msg)
        t0 = time.perf_counter()
        self.s.sendto(raw, self.addr)
        while True:
            try:
                data = self.s.recv(2048)
            except socket.timeout:
                if retransmit <= 0:
                    raise
                retransmit -= 1
                self.s.sendto(raw, self.addr)
                continue
            resp = cm.parse(data)
            if resp.mid == self.mid:
                return resp, time.perf_counter() - t0

    def close(self):
        self.s.close()


def unlock_flow(lock, client_key, tok, c):
    """Upload, then unlock with the cnonce of the 2.01. Returns the code."""
    resp, _ = c.request(cm.POST, "authz-info", [(cm.CONTENT_FORMAT, b"\x3d")], tok)
    if resp.code != cm.CREATED:
        return resp.code
    nonce = cbor2.loads(resp.payload)[39]
    proof = ch.pop_proof(client_key, lock.device_id, nonce, "unlock", ch.token_id(tok))
    resp, _ = c.request(cm.POST, "lock/unlock", [(cm.POP, proof)])
    return resp.code


# The phone of lockctl (aiocoap) against a SimLock: one call, one exchange.
def phone(lock, tok, key):
    from lockctl.client import Phone
    return Phone("127.0.0.1", lock.port, lock.device_id, tok, key)


async def upload(lock, tok, key):
    """POST /authz-info with `tok`; the Outcome."""
    async with phone(lock, tok, key) as p:
        return await p.upload()


async def act(lock, tok, key, action, **kw):
    """Use a token the lock already stores: challenge, proof, retry."""
    async with phone(lock, tok, key) as p:
        return await p.act(action, **kw)


async def upload_and(lock, tok, key, action, **kw):
    """Upload `tok`, then `action` with it (the upload's Outcome if refused)."""
    async with phone(lock, tok, key) as p:
        up = await p.upload()
        if not up.ok:
            return up
        return await p.act(action, **kw)
