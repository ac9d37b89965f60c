#!/usr/bin/env bash
# A two-network test topology in network namespaces (no traffic leaves this machine):
#
#   PREFIX-client ──public 10.201.N.0/24── PREFIX-gw ──private 10.202.N.0/24 (bridge in PREFIX-sw)── PREFIX-r0, PREFIX-r1
#
#   client 10.201.N.2   gateway public 10.201.N.1, private 10.202.N.10   routers 10.202.N.1 and .2
#
# Usage: topology.sh up PREFIX N      (N: 1..250, picks the subnets)
#        topology.sh down PREFIX
set -euo pipefail
cmd=${1:?up|down}; p=${2:?prefix}
ns() { ip netns exec "$1" "${@:2}"; }
case "$cmd" in
up)
    n=${3:?subnet number 1..250}
    for x in client gw sw r0 r1; do ip netns add "$p-$x"; ns "$p-$x" ip link set lo up; done
    # Public network: client <-> gateway.
    ip link add "$p-c" type veth peer name "$p-gp"
    ip link set "$p-c" netns "$p-client"; ip link set "$p-gp" netns "$p-gw"
    ns "$p-client" ip addr add "10.201.$n.2/24" dev "$p-c"; ns "$p-client" ip link set "$p-c" up
    ns "$p-gw" ip addr add "10.201.$n.1/24" dev "$p-gp"; ns "$p-gw" ip link set "$p-gp" up
    # Private network: a bridge in PREFIX-sw, the gateway and the routers on it.
    ns "$p-sw" ip link add br0 type bridge; ns "$p-sw" ip link set br0 up
    for pair in "gw:10" "r0:1" "r1:2"; do
        x=${pair%%:*}; host=${pair##*:}
        ip link add "$p-$x-i" type veth peer name "$p-$x-b"
        ip link set "$p-$x-i" netns "$p-$x"; ip link set "$p-$x-b" netns "$p-sw"
        ns "$p-sw" ip link set "$p-$x-b" master br0; ns "$p-sw" ip link set "$p-$x-b" up
        ns "$p-$x" ip addr add "10.202.$n.$host/24" dev "$p-$x-i"; ns "$p-$x" ip link set "$p-$x-i" up
    done
    echo "up: client 10.201.$n.2, gateway 10.201.$n.1 / 10.202.$n.10, routers 10.202.$n.1 10.202.$n.2"
    ;;
down)
    for x in client gw sw r0 r1; do ip netns del "$p-$x" 2>/dev/null || true; done
    ;;
*) echo "usage: $0 up PREFIX N | down PREFIX" >&2; exit 2 ;;
esac
