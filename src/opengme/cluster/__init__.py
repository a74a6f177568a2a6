"""Several nodes as one service (issue 18): the live state they agree on lives in Redis.

``redis_url`` switches it on. Its optional ``prefix`` query parameter names the keys' prefix
(default ``opengme``), so that several clusters — or test runs — can share one Redis.
"""


class ClusterError(Exception):
    """The cluster cannot be used (Redis unreachable …); the message is one line naming what to fix."""
