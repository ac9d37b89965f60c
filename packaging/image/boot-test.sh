#!/usr/bin/env bash
# Boots the appliance image under qemu (TCG: no KVM here) with user networking and a
# forwarded port, waits for multi-user, then from the host registers two users with
# switchboard-client through the port, sends a message and checks the delivery and
# the receipts: real replies, not a bare TCP connect. Then powers the guest off.
# PINs go from the guest's `http` SMS sink to a stand-in provider on the host (10.0.2.2).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-target/image}
hostport=${HOSTPORT:-17443}
smsport=${SMSPORT:-18025}
skip() { echo "SKIPPED: $*"; echo "0 passed, 0 failed"; exit 0; }
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    # From bookworm-backports: plain bookworm's qemu-system-x86 would replace the
    # machine's newer qemu-utils.
    if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/backports.list
    fi
    apt-get update -qq >/dev/null 2>&1 || skip "no Debian mirror"
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null 2>&1 || skip "qemu-system-x86 cannot be installed"
fi
work=$(mktemp -d /tmp/sbboot.XXXXXX)
cleanup() {
    [ -f "$work/qemu.pid" ] && kill "$(cat "$work/qemu.pid")" 2>/dev/null || true
    [ -n "${smspid:-}" ] && kill "$smspid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
printf 'listen = "0.0.0.0:7443"\ndata_dir = "/var/lib/switchboard"\n[sms]\nkind = "http"\nurl = "http://10.0.2.2:%s/sms"\n[process]\ntune_profile = "linux-1m"\n' "$smsport" > "$work/config.toml"
SWITCHBOARD_IMAGE_CONFIG="$work/config.toml" OUT="$out" packaging/image/build.sh >/dev/null || skip "the image could not be built (no Debian mirror?)"
python3 packaging/image/mock_sms.py "$smsport" "$work/sms.jsonl" &
smspid=$!
cp "$out/switchboard.qcow2" "$work/disk.qcow2"
started=$(date +%s)
qemu-system-x86_64 -accel tcg -m 1536 -smp 2 -display none \
    -serial "file:$work/console.log" \
    -kernel "$out/vmlinuz" -initrd "$out/initrd.img" -append "$(cat "$out/cmdline") systemd.journald.forward_to_console=1" \
    -drive "file=$work/disk.qcow2,if=virtio,format=qcow2" \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$hostport-:7443" -device virtio-net-pci,netdev=n0 \
    -monitor "unix:$work/monitor.sock,server,nowait" -pidfile "$work/qemu.pid" -daemonize
until grep -q "Reached target.*Multi-User" "$work/console.log" 2>/dev/null; do
    [ $(( $(date +%s) - started )) -lt 300 ] || { tail -30 "$work/console.log"; echo "FAIL: no multi-user in 300 s"; exit 1; }
    sleep 2
done
echo "ok: guest reached multi-user in $(( $(date +%s) - started )) s"
client="target/release/switchboard-client --server 127.0.0.1:$hostport --fingerprint $(cat "$out/fingerprint") --keys $work/keys"
C="$client --timeout 30"
a=+15551230001; b=+15551230002
deadline=$(( $(date +%s) + 240 ))
for u in $a $b; do
    # The appliance may still be starting: retry (each try bounded) until the deadline.
    until timeout 20 $client --timeout 5 register $u >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || { grep -a -i switchboard "$work/console.log" | tail -20; echo "FAIL: cannot register $u through the forwarded port"; exit 1; }
        sleep 2
    done
    # The guest posts the PIN to the stand-in provider (slow under TCG: allow a minute).
    for i in $(seq 1 60); do grep -q "\"$u\"" "$work/sms.jsonl" 2>/dev/null && break; sleep 1; done
    $C verify $u "$(grep "\"$u\"" "$work/sms.jsonl" | tail -1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["pin"])')" >/dev/null
done
echo "ok: two users registered through the forwarded port (PINs via the guest's http SMS sink)"
$C send --as $a $b "hello from the host" | grep -q "stored" || { echo "FAIL: no server tick"; exit 1; }
$C listen --as $b --count 1 --read | grep -q "hello from the host" || { echo "FAIL: not delivered"; exit 1; }
receipts=$(timeout 20 $C listen --as $a --count 0 || true)
grep -q "delivered to $b" <<<"$receipts" || { echo "FAIL: no delivered receipt: $receipts"; exit 1; }
grep -q "read by $b" <<<"$receipts" || { echo "FAIL: no read receipt: $receipts"; exit 1; }
echo "ok: message delivered, server tick, delivered and read receipts"
python3 -c "import socket; s=socket.socket(socket.AF_UNIX); s.connect('$work/monitor.sock'); s.sendall(b'system_powerdown\n')"
for i in $(seq 1 60); do kill -0 "$(cat "$work/qemu.pid")" 2>/dev/null || break; sleep 1; done
echo "ok: guest powered off; whole run $(( $(date +%s) - started )) s after boot start"
echo "4 passed, 0 failed"
