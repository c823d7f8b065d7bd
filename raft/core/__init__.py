"""The deterministic Raft core: a pure state machine driven through RawNode and Ready.

Invariant: nothing in this package does I/O, reads a clock, or uses randomness
other than the injected Config.rng; same inputs give the same outputs.
Must not import asyncio, time, os, or anything outside the standard library.
"""
