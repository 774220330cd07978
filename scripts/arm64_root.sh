#!/usr/bin/env bash
# An arm64 Debian root that this x86 machine runs under qemu-user (make test-arm64 uses it).
#   scripts/arm64_root.sh [ROOT]      (default .cache/arm64-root; prints ROOT on success)
# Installs Debian's debootstrap and qemu-user-static when missing, registers qemu-aarch64 with
# binfmt_misc with the fix-binary flag (so the interpreter works inside a chroot), and makes the root
# once: built under a temporary name and renamed when complete, so a half-made root is never reused.
# Needs root (apt, mount, chroot). Every failure is one line `error: ... Next step` and exit 1.
set -euo pipefail

ROOT=${1:-.cache/arm64-root}
SUITE=${ARM64_SUITE:-bookworm}
STAMP=.invedge-root-complete
PACKAGES=python3,python3-venv,python3-pip,ca-certificates
BINFMT=/proc/sys/fs/binfmt_misc

die() { echo "error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "making the arm64 root needs root (apt, mount, chroot). Run make test-arm64 as root"
command -v apt-get >/dev/null || die "no apt-get: this target needs Debian. Install debootstrap and qemu-user-static by hand"

# The Debian mirror apt uses here (deb822 or one-line sources), else Debian's default.
mirror() {
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    [ -n "$uri" ] || uri=$(grep -hsE '^deb +(\[[^]]*\] +)?https?://[^ ]+/debian/? ' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}' | head -n1 || true)
    echo "${ARM64_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

ensure_tools() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ -x /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || [ -x /usr/bin/qemu-aarch64-static ] \
        || missing+=(qemu-user-static)
    command -v update-binfmts >/dev/null || missing+=(binfmt-support)
    [ ${#missing[@]} = 0 ] && return
    echo "installing ${missing[*]} (apt)" >&2
    timeout 600 apt-get install -y -qq "${missing[@]}" >/dev/null \
        || { timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq "${missing[@]}" >/dev/null; } \
        || die "apt-get could not install ${missing[*]}. Install them by hand (apt-get install ${missing[*]})"
}

ensure_binfmt() {
    if [ ! -e "$BINFMT/register" ]; then
        mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null \
            || die "binfmt_misc is not mounted and cannot be (a container without it?). Run on a host or VM with binfmt_misc, or mount it: mount -t binfmt_misc binfmt_misc $BINFMT"
    fi
    if [ ! -e "$BINFMT/qemu-aarch64" ]; then
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || register_by_hand
    fi
    [ -e "$BINFMT/qemu-aarch64" ] || die "qemu-aarch64 is not registered with binfmt_misc. Run: update-binfmts --enable qemu-aarch64"
    grep -q '^enabled' "$BINFMT/qemu-aarch64" || echo 1 >"$BINFMT/qemu-aarch64"
    grep -qE '^flags:.*F' "$BINFMT/qemu-aarch64" \
        || die "qemu-aarch64 is registered without the fix-binary flag (F), so it fails inside a chroot. Run: echo -1 > $BINFMT/qemu-aarch64, then rerun"
}

# The register line Debian's qemu-user-static ships (/usr/share/binfmts/qemu-aarch64), flags P and F.
register_by_hand() {
    local interp=/usr/libexec/qemu-binfmt/aarch64-binfmt-P
    [ -x "$interp" ] || interp=/usr/bin/qemu-aarch64-static
    local magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
    local mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
    echo ":qemu-aarch64:M::${magic}:${mask}:${interp}:PF" >"$BINFMT/register" 2>/dev/null || true
}

make_root() {
    [ -e "$ROOT/$STAMP" ] && return
    local tmp="$ROOT.partial"
    [ -e "$ROOT" ] && rm -rf --one-file-system "$ROOT"  # a root without the stamp is half-made
    rm -rf --one-file-system "$tmp"
    mkdir -p "$(dirname "$ROOT")"
    local url
    url=$(mirror)
    echo "making the arm64 $SUITE root in $ROOT from $url (about 5 minutes, once)" >&2
    timeout "${ARM64_ROOT_TIMEOUT:-1800}" debootstrap --arch=arm64 --variant=minbase --include="$PACKAGES" \
        "$SUITE" "$tmp" "$url" >"$tmp.log" 2>&1 \
        || die "debootstrap failed or ran out of time (log: $tmp.log). Check the mirror ($url) and rerun"
    chroot "$tmp" /usr/bin/python3 -c 'import platform, venv; assert platform.machine() == "aarch64"' \
        || die "the new root's python3 does not run as aarch64 under qemu. Check $BINFMT/qemu-aarch64"
    date -u +%FT%TZ >"$tmp/$STAMP"
    mv "$tmp" "$ROOT"
    rm -f "$tmp.log"
}

ensure_tools
ensure_binfmt
make_root
echo "$ROOT"
