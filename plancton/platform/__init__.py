"""What the host says: CPU and memory use, pressure, the pilots' cgroup, systemd notification."""
