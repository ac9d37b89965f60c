#!/usr/bin/env bash
# Builds a bootable Debian bookworm appliance image with the switchboard .deb installed:
#   target/image/switchboard.raw (ext4, no partition table), switchboard.qcow2,
#   vmlinuz, initrd.img, cmdline (kernel command line incl. the profile's boot-time
#   entries), fingerprint (of the certificate generated into the image).
# Env: SWITCHBOARD_IMAGE_CONFIG (config file to install; default packaging/deb/etc/switchboard.toml),
#      SWITCHBOARD_PROFILE (tuning profile, default linux-1m), OUT (default target/image).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-target/image}
config=${SWITCHBOARD_IMAGE_CONFIG:-packaging/deb/etc/switchboard.toml}
profile=${SWITCHBOARD_PROFILE:-linux-1m}
mkdir -p "$out"
deb=$(packaging/deb/build.sh | tail -1)
command -v mmdebstrap >/dev/null 2>&1 || apt-get install -y -qq mmdebstrap >/dev/null
command -v mkfs.ext4 >/dev/null 2>&1 || apt-get install -y -qq e2fsprogs >/dev/null
command -v qemu-img >/dev/null 2>&1 || apt-get install -y -qq qemu-utils >/dev/null
root=$(mktemp -d /tmp/sbimage.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "image: root filesystem (mmdebstrap bookworm minbase + kernel + systemd)" >&2
mmdebstrap --quiet --variant=minbase \
    --include=linux-image-amd64,systemd,systemd-sysv,udev,iproute2,procps,kmod,adduser,ca-certificates \
    bookworm "$root"
cp "$deb" "$root/tmp/switchboard.deb"
chroot "$root" dpkg -i /tmp/switchboard.deb >/dev/null
rm "$root/tmp/switchboard.deb"
cp "$config" "$root/etc/switchboard/switchboard.toml"
chroot "$root" sh -c 'chgrp switchboard /etc/switchboard/switchboard.toml && chmod 0640 /etc/switchboard/switchboard.toml'
chroot "$root" switchboard serve --check --config /etc/switchboard/switchboard.toml >&2
# The certificate is made now, so whoever builds the image knows what clients pin.
chroot "$root" switchboard tls fingerprint --data /var/lib/switchboard > "$out/fingerprint"
chroot "$root" chown -R switchboard:switchboard /var/lib/switchboard
# Networking by DHCP on every wired interface.
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' > "$root/etc/systemd/network/20-dhcp.network"
chroot "$root" systemctl enable systemd-networkd >/dev/null 2>&1
echo switchboard > "$root/etc/hostname"
echo "/dev/vda / ext4 defaults 0 1" > "$root/etc/fstab"
# Boot-time entries of the profile on the kernel command line; runtime ones come from
# /usr/lib/sysctl.d/60-switchboard.conf (in the package) at every boot.
boot=$(target/release/switchboard tune render "$profile" --format cmdline)
echo "root=/dev/vda rw console=ttyS0 $boot" > "$out/cmdline"
cp "$out/cmdline" "$root/etc/kernel/cmdline" 2>/dev/null || { mkdir -p "$root/etc/kernel" && cp "$out/cmdline" "$root/etc/kernel/cmdline"; }
cp "$(ls "$root"/boot/vmlinuz-* | head -1)" "$out/vmlinuz"
cp "$(ls "$root"/boot/initrd.img-* | head -1)" "$out/initrd.img"
echo "image: ext4 image and qcow2" >&2
# Room for the logs: each shard allocates its segments whole (64 MiB each: the active one
# and the next, prepared ahead), and new messages are refused while less than two
# segments are free (kept for acknowledgements). 2 GiB holds a few shards and their
# queues; grow the filesystem (resize2fs) for more.
size_mb=$(( $(du -sm "$root" | cut -f1) + 2048 ))
rm -f "$out/switchboard.raw" "$out/switchboard.qcow2"
mkfs.ext4 -q -F -L switchboard -d "$root" "$out/switchboard.raw" "${size_mb}M"
qemu-img convert -O qcow2 "$out/switchboard.raw" "$out/switchboard.qcow2"
echo "$out/switchboard.qcow2"
