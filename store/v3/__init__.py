"""The deterministic v3 state: MVCC key-value store, leases and watchers (etcd's mvcc + lease).

Entry point: `store.v3.state.V3Store`. Must not import raft, asyncio, time or any HTTP package.
"""
