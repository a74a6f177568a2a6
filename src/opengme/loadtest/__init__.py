"""``opengme loadtest``: simulated members that enter through the real signalling and send paced,
encrypted Opus-sized voice datagrams through the relay, and what they measure.

Pure parts (no sockets, no clock): ``plan`` (the run's shape, its limits and the traffic it should
produce), ``pacing`` (when each speaker's next frame is due), ``stats`` (percentiles, the per-second
timeline and the report). I/O: ``runner`` (the members on one asyncio loop), ``baseline`` (a bare UDP
forwarder and its traffic, for comparison), ``plot`` (matplotlib, imported only for ``--plot``).
"""
