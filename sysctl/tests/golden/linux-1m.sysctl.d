# Switchboard tuning profile linux-1m: 1 million concurrent connections per host
# Rendered by `switchboard tune render`; edit the profile, not this file.

# per-network-namespace ehash for namespaces created after this is set (the private/public netns of the appliance)
# source: Linux 6.1+; same sizing as thash_entries / 2
net.ipv4.tcp_child_ehash_entries = 1048576

# per-process ceiling on open files: 1M sockets plus logs, with room for two gateway processes during an upgrade
# source: 4 × 1M
fs.nr_open = 4194304

# system-wide file handles
# source: equal to fs.nr_open
fs.file-max = 4194304

# accept queue that absorbs a reconnect storm of tens of thousands per second
# source: reconnect storm target: 10k clients back within 5 s per worker
net.core.somaxconn = 65535

# SYN queue matching the accept queue
# source: equal to somaxconn
net.ipv4.tcp_max_syn_backlog = 65535

# packets queued per CPU before the stack takes them (bursts of reconnects)
# source: common 10G tuning value
net.core.netdev_max_backlog = 65536

# source ports for the load generator and router links
# source: widened dynamic range
net.ipv4.ip_local_port_range = 1024 65535

# pages of TCP buffer memory before pressure (6/8/12 GiB): 1M mostly idle sockets at ~4 KB each
# source: measured ~3.9 KB kernel memory per idle connection (MEASURED.md)
net.ipv4.tcp_mem = 1572864 2097152 3145728

# small default receive buffers: idle connections must not reserve memory; autotuning grows busy ones up to 64 KiB
# source: per-connection budget ≤ 4 KB idle
net.ipv4.tcp_rmem = 4096 4096 65536

# small default send buffers, same reasoning
# source: per-connection budget ≤ 4 KB idle
net.ipv4.tcp_wmem = 4096 4096 65536

# if connection tracking is loaded, it must hold every connection (or be disabled for the public port)
# source: 1M connections × 2
net.netfilter.nf_conntrack_max = 2097152

# explicit huge pages are not needed: jemalloc uses transparent huge pages (thp:always); set a pool here to reserve memory for MAP_HUGETLB instead
# source: jemalloc THP measured: 1 GiB allocated → 1.06 GiB AnonHugePages (MEASURED.md)
vm.nr_hugepages = 0

# no realtime throttling for SCHED_FIFO gateway workers (they must not be paused 50 ms each second)
# source: default 950000 of 1000000 us
kernel.sched_rt_runtime_us = -1
