"""Many short Redis commands sent in one buffer packed by hiredis, over redis-py's connection pools.

redis-py's pipeline builds Python objects for every command and reply (about 10 us each); packing
with hiredis costs about a tenth of that, which counts when a refresh writes millions of ids.
Every command's key is its first argument; on a Redis Cluster each command goes to the master of
its key's slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Command = tuple[object, ...]


def send_to_slot(client: Any, commands: Sequence[Command]) -> list[Any]:
    """Send ``commands``, whose keys one master serves (one hash slot), in one round trip; their replies.

    On a cluster they all go to the master of the first command's slot (asked again once when
    the slot moved, a resharding)."""
    import redis

    try:
        replies = _send(_pool_for(client, commands[0][1]), commands)
    except redis.exceptions.ResponseError as error:
        if not (is_cluster(client) and _moved(error)):
            raise
        client.nodes_manager.initialize()
        replies = _send(_pool_for(client, commands[0][1]), commands)
    return _checked(replies)


def send_spread(client: Any, commands: Sequence[Command]) -> list[Any]:
    """Send ``commands`` whose keys may lie in any slot: one buffer per master they touch (one in
    all on a single Redis); their replies, in order. On a cluster whose slots moved (a
    resharding) the commands are grouped again and sent once more: send only idempotent ones."""
    import redis

    if not commands:
        return []
    if not is_cluster(client):
        return _checked(_send(client.connection_pool, commands))
    try:
        return _spread_once(client, commands)
    except redis.exceptions.ResponseError as error:
        if not _moved(error):
            raise
        client.nodes_manager.initialize()
        return _spread_once(client, commands)


def _spread_once(client: Any, commands: Sequence[Command]) -> list[Any]:
    groups: dict[int, tuple[Any, list[int]]] = {}
    for index, command in enumerate(commands):
        node = client.get_node_from_key(command[1])
        groups.setdefault(id(node), (node, []))[1].append(index)
    replies: list[Any] = [None] * len(commands)
    for node, indexes in groups.values():  # every command of a group is served by one master
        part = _checked(_send(node.redis_connection.connection_pool, [commands[i] for i in indexes]))
        for index, reply in zip(indexes, part, strict=True):
            replies[index] = reply
    return replies


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a redis-py ``RedisCluster``."""
    return hasattr(client, "get_node_from_key")


def _pool_for(client: Any, key: object) -> Any:
    if is_cluster(client):
        return client.get_node_from_key(key).redis_connection.connection_pool
    return client.connection_pool


def _checked(replies: list[Any]) -> list[Any]:
    import redis

    for reply in replies:
        if isinstance(reply, redis.exceptions.ResponseError):
            raise reply
    return replies


def _send(pool: Any, commands: Sequence[Command]) -> list[Any]:
    import hiredis

    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(hiredis.pack_command(command) for command in commands)])
        return [conn.read_response() for _ in commands]
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _moved(error: Exception) -> bool:
    return str(error).startswith(("MOVED", "ASK")) or type(error).__name__ in ("MovedError", "AskError")
