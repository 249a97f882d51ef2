#!/bin/busybox sh
# The VM guest's init (busybox sh): mounts what the tests need, prints the booted marker with
# the exact kernel build, runs /command.sh, prints the exit marker with its status and powers
# off. `panic=-1` on the kernel command line turns a panic into an immediate exit of QEMU
# (`-no-reboot`), so every run ends with either the exit marker or a panic.
#
# Nothing is mounted over /tmp: the initramfs root is writable already, and a checkout under
# /tmp (where a CI clone may live) holds the test binaries at their host paths.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/ TMPDIR=/tmp
# The markers (MARK_*), written by xtask from xtask/src/vm/protocol.rs.
. /etc/twtrace-protocol
# tmux (twtrace top's tests) insists on a UTF-8 locale; C.UTF-8 is in the initramfs.
export LANG=C.UTF-8 TERM=xterm-256color TERMINFO_DIRS=/lib/terminfo:/usr/share/terminfo
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs run /run
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
# cgroup v2 (4.5+): twtrace names a namespace after its container's cgroup, and a test makes
# container-shaped cgroups to check it.
mount -t cgroup2 none /sys/fs/cgroup
ip link set lo up
# A guest with the lab's tools (xtask/src/vm/expect.rs, `tools`) loads this build's modules,
# each after what it depends on (the order xtask read from the package's modules.dep). A
# module that does not load is said here, and the tests that need it fail.
if [ -f /etc/twtrace-modules ]; then
  while read -r module; do
    insmod "$module" || echo "twtrace-vm: insmod $module failed"
  done < /etc/twtrace-modules
fi
echo "$MARK_BOOTED $(uname -r) | $(uname -v)"
cd /tmp
sh /command.sh
echo "$MARK_EXIT $?"
poweroff -f
