"""Version strings: the etcd API version etcdpy serves and etcdpy's own."""

from __future__ import annotations

ETCD_VERSION = "3.4.23"  # clients choose their API paths from this
ETCD_CLUSTER_VERSION = "3.4.0"
ETCDPY_VERSION = "0.1.0"
