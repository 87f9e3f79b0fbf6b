"""A cluster in a box: real hosts (network, PID and mount namespaces, each with its own sshd) on this
machine, for trying and testing `ray up ray_cluster.yaml` without hardware. See docs/cluster.md."""
