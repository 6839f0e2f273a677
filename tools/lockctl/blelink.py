"""The simulator's virtual Bluetooth LE radio: Bumble controllers on one
link, no radio (`lockctl sim --ble`, host_tests' SimLock(ble=True)).

One `bumble.link.LocalLink` carries every controller:
- the lock's controller speaks H4 HCI on a pseudo-terminal (Bumble's `pty:`
  transport), whose path the lock gets as MICROPYBTUART (the unix port's
  NimBLE opens it as its HCI UART);
- each phone connects over TCP to 127.0.0.1:PORT and gets a controller of
  its own on the link (H4 HCI over the stream, the same bytes a UART would
  carry), so several phones can be near the lock at once. A phone is
  `lockctl ble --transport tcp-client:127.0.0.1:PORT` (the default).

usage: python -m lockctl.blelink --pty PATH [--port N]
Prints "BLELINK pty=PATH port=N" once both are open, then serves until
killed. The link has no radio timing: packets cross it as fast as asyncio
hands them over.
"""
import argparse
import asyncio
import os
import sys

DEFAULT_PORT = 5695
# HCI error 0x08, Connection Timeout: what the lock sees when a phone's
# radio vanishes (Bluetooth Core vol. 1 part F).
_SUPERVISION_TIMEOUT = 0x08
# HCI error 0x3E, Connection Failed to be Established.
_NOT_ESTABLISHED = 0x3E


async def serve(pty_path, port, host="127.0.0.1", ready=None):
    """Open the lock's pty and the phones' TCP listener; run until cancelled.
    `ready(pty_path, port)` is called once both are open."""
    from bumble import ll
    from bumble.controller import Controller
    from bumble.link import LocalLink
    from bumble.transport.common import StreamPacketSource
    from bumble.transport.pty import open_pty_transport

    class _LockController(Controller):
        def on_hci_reset_command(self, command):
            # HCI_Reset (Core vol. 4 part E 7.3.2) ends the controller's
            # links and its advertising, as a real controller's does
            # (Bumble's keeps both). NimBLE resets after an HCI command
            # timed out: the lock's host has forgotten its connection, so
            # the phone must see the link go, not wait on it.
            for conn in list(self.le_connections.values()):
                try:
                    conn.send_ll_control_pdu(ll.TerminateInd(_SUPERVISION_TIMEOUT))
                except Exception:
                    pass  # the peer already went
                self.le_connections.pop(conn.peer_address, None)
            try:
                self.le_legacy_advertiser.stop()
            except Exception:
                pass
            return Controller.on_hci_reset_command(self, command)

        def on_le_connect_ind(self, packet):
            # Two phones that connect in one advertising event: the first
            # stops the lock's advertising and Bumble drops the second's
            # request, although the second phone's controller has already
            # reported its connection, so it would wait on a link nobody
            # has. A real central's connection then fails to be established
            # (HCI 0x3E, after six connection intervals with no answer) and
            # its host sees it end: say so to that phone, 0.2 s later.
            addr = packet.advertiser_address
            adv = self.le_legacy_advertiser
            sets = self.advertising_sets.values()
            ours = adv.address == addr or any(a.address == addr for a in sets)
            live = (adv.address == addr and adv.enabled) or any(a.address == addr and a.enabled for a in sets)
            if ours and not live and self.link:
                def fail(link=self.link, peer=packet.initiator_address):
                    try:
                        link.send_ll_control_pdu(sender_address=addr, receiver_address=peer,
                                                 packet=ll.TerminateInd(_NOT_ESTABLISHED))
                    except Exception:
                        pass  # that phone already left the link
                asyncio.get_running_loop().call_later(0.2, fail)
                return
            return Controller.on_le_connect_ind(self, packet)

    link = LocalLink()
    lock_t = await open_pty_transport(pty_path)
    _LockController("lock", host_source=lock_t.source, host_sink=lock_t.sink, link=link)
    count = [0]

    class _Sink:
        def __init__(self, transport):
            self.transport = transport

        def on_packet(self, packet):
            if not self.transport.is_closing():
                self.transport.write(packet)

    class _Phone(asyncio.Protocol):
        def connection_made(self, transport):
            count[0] += 1
            self.source = StreamPacketSource()
            # A public address of its own per phone controller, so two phones
            # on the link never answer for each other.
            addr = "F0:00:00:00:%02X:%02X" % ((count[0] >> 8) & 0xFF, count[0] & 0xFF)
            self.ctrl = Controller("phone-%d" % count[0], host_source=self.source,
                                   host_sink=_Sink(transport), link=link, public_address=addr)

        def data_received(self, data):
            self.source.data_received(data)

        def connection_lost(self, exc):
            # The phone went away: its controller leaves the link (its
            # connections end as if it moved out of range).
            for conn in list(self.ctrl.le_connections.values()):
                try:
                    conn.send_ll_control_pdu(ll.TerminateInd(_SUPERVISION_TIMEOUT))
                    self.ctrl.on_le_disconnected(conn, _SUPERVISION_TIMEOUT)
                except Exception:
                    pass  # the peer already went
            try:
                link.remove_controller(self.ctrl)
            except KeyError:
                pass

    server = await asyncio.get_running_loop().create_server(_Phone, host, port)
    port = server.sockets[0].getsockname()[1]
    if ready:
        ready(pty_path, port)
    try:
        await asyncio.Event().wait()
    finally:
        server.close()
        await lock_t.close()


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lockctl.blelink", description=__doc__.split("\n\n")[0])
    p.add_argument("--pty", required=True, help="path of the symbolic link to the lock's pty")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port for phones (0: any free port)")
    p.add_argument("--parent", type=int, help="end when the process with this pid ends (the lock)")
    a = p.parse_args(argv)
    if os.path.lexists(a.pty):
        os.unlink(a.pty)  # a stale link of a killed run

    def ready(path, port):
        print("BLELINK pty=%s port=%d" % (path, port), flush=True)
        if a.parent:
            # Whoever read that line may be gone (lockctl sim execs the
            # lock): nothing more is written to its pipe.
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)

    async def run():
        task = asyncio.ensure_future(serve(a.pty, a.port, ready=ready))
        while a.parent and not task.done():
            await asyncio.sleep(0.5)
            if not _alive(a.parent):
                task.cancel()
        await task

    try:
        asyncio.run(run())
    except asyncio.CancelledError:
        pass
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print("blelink: %s" % e, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
