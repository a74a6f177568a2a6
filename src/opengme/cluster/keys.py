"""The Redis keys and channels of a cluster: one place, so every part names them alike.

- ``node:<node_id>`` (hash, expires ``NODE_TTL`` s after the last heartbeat): ``url`` (how clients
  reach the node), ``udp_port``, ``rooms``, ``members``, ``started``. ``nodes`` (set) lists the ids
  ever registered; an id whose hash expired is a dead node.
- ``room:<app_id>:<room_id>`` → the node id that serves the room.
- ``removed:<app_id>:<open_id>:<room_id>`` → when the server removed that member (kick, dissolve):
  its older resume tokens must not bring it back through any node. Expires with the tokens.
- ``nonce:<key_id>:<nonce>``: an admin request's nonce, set once (``SET NX``), expiring after twice the
  allowed clock skew; for a state-changing API 3.0 request (SecretId, signature), its first answer.
- channel ``bus:<node_id>``: actions and pushes for the rooms and members of one node; the answer to
  an action goes to the list ``reply:<token>`` the caller named (``LPUSH``, short expiry; it ``BLPOP``s).
- ``noderooms:<node_id>`` (hash, expires ``NODE_TTL`` s after the node's last refresh): the node's rooms,
  one JSON field ``<app_id>/<room_id>`` each with its members, which the cluster-wide room listings and
  "who is online" merge.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

DEFAULT_PREFIX = "opengme"
NODE_TTL = 3.0
"""Seconds a node counts as alive after its last heartbeat."""
HEARTBEAT = 1.0
"""Seconds between a node's heartbeats."""


def split_url(redis_url: str) -> tuple[str, str]:
    """``redis_url`` without its ``prefix`` parameter (what redis-py is given), and the prefix."""
    parts = urlsplit(redis_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for name, value in query if name == "prefix"), "") or DEFAULT_PREFIX
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    return parts._replace(query=rest).geturl(), prefix


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def node(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    def room(self, app_id: str, room_id: str) -> str:
        return f"{self.prefix}:room:{app_id}:{room_id}"

    def removed(self, app_id: str, open_id: str, room_id: str) -> str:
        return f"{self.prefix}:removed:{app_id}:{open_id}:{room_id}"

    def nonce(self, key_id: str, nonce: str) -> str:
        return f"{self.prefix}:nonce:{key_id}:{nonce}"

    def bus(self, node_id: str) -> str:
        return f"{self.prefix}:bus:{node_id}"

    def reply(self, token: str) -> str:
        return f"{self.prefix}:reply:{token}"

    def noderooms(self, node_id: str) -> str:
        return f"{self.prefix}:noderooms:{node_id}"


# --- speech jobs (``opengme worker``, :mod:`opengme.cluster.jobs`) ----------------------------------
# - ``stt:jobs`` (stream, consumer group ``stt``): file jobs (recognise a stored message, speak a text).
# - ``stt:reply:<job_id>`` (list, expiring): the result a worker pushes for the node that waits on it.
# - ``stt:worker:<worker_id>`` (hash, expires ``STT_WORKER_TTL`` s after the last heartbeat): a live
#   worker; ``stt:workers`` (set) lists the ids ever announced, as ``nodes`` does for nodes.
# - ``stt:running:<app_id>`` (sorted set of job ids by deadline): an app's file jobs in flight on every
#   node, so its ``stt_max_file_jobs`` holds cluster-wide; a job of a node that died leaves at its deadline.

STT_WORKER_TTL = 3.0
"""Seconds a speech worker counts as alive after its last heartbeat (sent every ``HEARTBEAT``)."""


def stt_jobs(keys: Keys) -> str:
    return f"{keys.prefix}:stt:jobs"


def stt_reply(keys: Keys, job_id: str) -> str:
    return f"{keys.prefix}:stt:reply:{job_id}"


def stt_worker(keys: Keys, worker_id: str) -> str:
    return f"{keys.prefix}:stt:worker:{worker_id}"


def stt_workers(keys: Keys) -> str:
    return f"{keys.prefix}:stt:workers"


def stt_running(keys: Keys, app_id: str) -> str:
    return f"{keys.prefix}:stt:running:{app_id}"


# --- invitations (:mod:`opengme.server.invitations`) ------------------------------------------------
# - ``invitation:<app_id>:<invite_id>`` (JSON, expiring with the invitation): a pending invitation, so
#   that the invitee's answer is taken by whichever node it reaches, and a node's restart forgets none.


def invitation(keys: Keys, app_id: str, invite_id: str) -> str:
    return f"{keys.prefix}:invitation:{app_id}:{invite_id}"
