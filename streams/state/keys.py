"""Redis key names: every member key hash-tagged by member, so Redis Cluster works.

`mp:{<tag>}:s` state (its value holds the decision state too, since layout 5),
`mp:{<tag>}:o` outbox, and `mp:{<tag>}:d` the decision state of layouts 4 and older (read,
folded into the state value, deleted). The tag is the
member id itself when it is plain (letters, digits, `_ . - @`, at most 64 characters, not
starting with `~`); anything else — braces, colons, `*`, spaces, newlines, long unicode —
becomes `~` + 40 hex digits of its SHA-256, so no id can leave its key space, change the
hash slot of its keys or collide with another member's plain id. The state blob also
carries the raw member id and the scripts refuse a mismatch.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

_PLAIN: Final = re.compile(r"[A-Za-z0-9_.\-@]{1,64}")
_HASHED_PREFIX: Final = "~"
_HASH_HEX: Final = 40
STATE: Final = "s"
DECISION: Final = "d"
OUTBOX: Final = "o"


def member_tag(member_id: str) -> str:
    """The hash tag for a member's keys (the id, or a digest of it when not plain)."""
    if _PLAIN.fullmatch(member_id) and not member_id.startswith(_HASHED_PREFIX):
        return member_id
    digest = hashlib.sha256(member_id.encode("utf-8", "surrogatepass")).hexdigest()
    return _HASHED_PREFIX + digest[:_HASH_HEX]


def member_keys(prefix: str, member_id: str) -> tuple[str, str, str]:
    """(state, decision state of layouts 4 and older, outbox) keys of a member."""
    base = f"{prefix}:{{{member_tag(member_id)}}}:"
    return base + STATE, base + DECISION, base + OUTBOX


def idle_key(prefix: str, partition: int) -> str:
    """The per-partition sorted set of next idle-check times (its own hash slot)."""
    return f"{prefix}:idle:{{p{partition}}}"


def budget_key(prefix: str, budget: str, day: int) -> str:
    """A budget's ledger for one event-time day (its own hash slot)."""
    return f"{prefix}:budget:{{{budget}}}:{day}"


def clock_key(prefix: str) -> str:
    """The sorted set of each partition's event time (the largest event ts applied): what a
    worker that takes a partition over resumes its idle checks from."""
    return f"{prefix}:clock"
