"""Speech-to-text, offline: a :class:`~opengme.stt.base.Recognizer` per language (pocketsphinx, en-US,
by default) and a pool of worker processes that runs recognition off the event loop.

Nothing is downloaded at run time: the default engine's model ships inside the ``pocketsphinx``
wheel, and any other engine is given a model path on this machine (see :mod:`opengme.stt.base`).
"""
