#!/usr/bin/env bash
# System packages the build and the tests need (Debian/Ubuntu names):
#   gcc-multilib  the simulator's interpreter is a 32-bit (-m32) build
#   make, pkg-config  MicroPython's build
#   libcoap3-bin  coap-client-notls, -openssl and -gnutls: real CoAP and CoAPS
#                 peers in the end-to-end tests
#   autoconf, automake  building DTLSSocket (requirements.txt) from source:
#                 its setup runs tinydtls's autogen.sh (autoreconf)
# Installs the missing ones with apt-get when it can (root, or sudo without a
# password); otherwise stops on one line that names them.
set -u
missing() {
    need=()
    command -v make >/dev/null 2>&1 || need+=(make)
    command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
    for c in coap-client-notls coap-client-openssl coap-client-gnutls; do
        command -v $c >/dev/null 2>&1 || { need+=(libcoap3-bin); break; }
    done
    command -v autoreconf >/dev/null 2>&1 || need+=(autoconf)
    command -v automake >/dev/null 2>&1 || need+=(automake)
    probe=$(mktemp -d)
    printf 'int main(void){return 0;}\n' > "$probe/t.c"
    gcc -m32 -o "$probe/t" "$probe/t.c" >/dev/null 2>&1 || need+=(gcc-multilib)
    rm -rf "$probe"
}
missing
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
    as_root=
    if [ "$(id -u)" -eq 0 ]; then
        as_root=yes
        run() { "$@"; }
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=yes
        run() { sudo -n "$@"; }
    fi
    if [ -n "$as_root" ]; then
        echo "sysdeps: installing ${need[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        run apt-get update -qq >/dev/null && run apt-get install -y -qq "${need[@]}" >/dev/null
        missing
        [ ${#need[@]} -eq 0 ] && exit 0
    fi
fi
echo "missing system packages: ${need[*]} (install them, e.g. sudo apt-get install ${need[*]}, then rerun)" >&2
exit 1
