# Switchboard tuning profile linux-dev: development and small deployments: ~50k connections
# Rendered by `switchboard tune render`; edit the profile, not this file.

# accept queue deep enough for reconnect bursts of a few thousand
# source: kernel default 4096 since 5.4; kept explicit
net.core.somaxconn = 4096

# SYN queue matching the accept queue
# source: rule of thumb: equal to somaxconn
net.ipv4.tcp_max_syn_backlog = 4096

# more source ports for the load generator and outgoing links
# source: IANA dynamic range widened; common practice for load testing
net.ipv4.ip_local_port_range = 1024 65535

# system-wide file handles: one per connection plus logs
# source: 2 × target connections
fs.file-max = 262144
