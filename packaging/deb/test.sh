#!/usr/bin/env bash
# Tests the .deb: its contents and maintainer scripts, then install, upgrade, remove and
# purge inside a throwaway Debian root (mmdebstrap), checking that the data directory and
# what is in it survive. Usage: packaging/deb/test.sh [path/to/switchboard.deb]
set -euo pipefail
cd "$(dirname "$0")/../.."
deb=${1:-$(ls -t target/debian/switchboard_*.deb | head -1)}
fail() { echo "FAIL: $*" >&2; exit 1; }
pass=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }

# 1. Contents: units really in the package, config, tuning, binaries.
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in ./usr/bin/switchboard ./usr/bin/switchboard-client \
         ./usr/lib/systemd/system/switchboard.service \
         ./usr/lib/systemd/system/switchboard-gateway@.service \
         ./usr/lib/systemd/system/switchboard-router@.service \
         ./etc/switchboard/switchboard.toml \
         ./usr/lib/sysctl.d/60-switchboard.conf \
         ./etc/security/limits.d/switchboard.conf; do
    grep -qx -- "$f" <<<"$contents" || fail "$f is not in the package"
done
ok "package contents"
ctl=$(mktemp -d)
dpkg-deb -e "$deb" "$ctl"
grep -q "deb-systemd-helper" "$ctl/postinst" || fail "postinst does not enable the unit"
grep -q "adduser --system" "$ctl/postinst" || fail "postinst does not create the user"
grep -qx "/etc/switchboard/switchboard.toml" "$ctl/conffiles" || fail "the config is not a conffile"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/lib/sysctl.d/60-switchboard.conf | grep -q "^net.core.somaxconn = " || fail "sysctl.d file not rendered"
ok "maintainer scripts, conffiles, rendered tuning"

# 2. Install, upgrade, remove, purge in a throwaway root.
if ! command -v mmdebstrap >/dev/null 2>&1; then
    apt-get install -y mmdebstrap >/dev/null 2>&1 || { echo "SKIPPED: mmdebstrap unavailable (no Debian mirror?)"; echo "$pass passed, 0 failed"; exit 0; }
fi
root=$(mktemp -d /tmp/sbroot.XXXXXX)
trap 'umount -R "$root/proc" 2>/dev/null || true; rm -rf "$root" "$ctl"' EXIT
if ! mmdebstrap --quiet --variant=minbase --include=adduser,systemd,procps bookworm "$root" >/dev/null 2>&1; then
    echo "SKIPPED: mmdebstrap could not build a root (no Debian mirror?)"; echo "$pass passed, 0 failed"; exit 0
fi
cp "$deb" "$root/tmp/switchboard.deb"
chroot "$root" dpkg -i /tmp/switchboard.deb >/dev/null || fail "install"
chroot "$root" getent passwd switchboard >/dev/null || fail "no switchboard user"
[ "$(chroot "$root" stat -c %U /var/lib/switchboard)" = switchboard ] || fail "data dir not owned by switchboard"
[ -L "$root/etc/systemd/system/multi-user.target.wants/switchboard.service" ] || fail "unit not enabled"
chroot "$root" switchboard serve --check --config /etc/switchboard/switchboard.toml >/dev/null || fail "shipped config does not validate"
ok "install: user, data directory, unit enabled, config valid"
echo "messages and accounts" > "$root/var/lib/switchboard/keepme"
echo "# edited by the operator" >> "$root/etc/switchboard/switchboard.toml"
chroot "$root" dpkg -i /tmp/switchboard.deb >/dev/null || fail "upgrade (reinstall)"
[ -f "$root/var/lib/switchboard/keepme" ] || fail "upgrade lost the data"
grep -q "edited by the operator" "$root/etc/switchboard/switchboard.toml" || fail "upgrade replaced the edited config"
ok "upgrade keeps data and the edited config"
chroot "$root" dpkg -r switchboard >/dev/null || fail "remove"
[ -f "$root/var/lib/switchboard/keepme" ] || fail "remove lost the data"
[ ! -e "$root/usr/bin/switchboard" ] || fail "remove left the binary"
chroot "$root" dpkg -P switchboard >/dev/null || fail "purge"
[ -f "$root/var/lib/switchboard/keepme" ] || fail "purge lost the data"
ok "remove and purge keep the data directory"
echo "$pass passed, 0 failed"
