"""Scale-out and operations: what lets several replicas share one Redis and keep serving through faults.

    redisconn  one REDIS_URL -> a standalone, Sentinel or Cluster client
    lock       per-conversation lock with a renewed lease; the engine's TurnGuard; fenced final writes
    jobs       pure: Turn + Route <-> the JSON a queue item holds
    queue      the durable turn queue: per-conversation inboxes + a Redis Streams consumer group of signals
    delivery   the Delivery port (one per platform), its registry, and the Dispatcher adapters hand turns to
    worker     takes signals, drains a conversation's inbox in order under its lock, hands replies to Delivery
    breaker    LLM wrappers: a circuit breaker (state shared in Redis) and a metering layer (TTFT, errors)
    pacing     LLM wrapper: the provider's rate limits as one Redis budget for all replicas; 429s retried
    metrics    Prometheus metrics of one bot (its own registry)
    http       /healthz, /readyz, /metrics and the routes adapters mount, on PORT (or PARLEY_OPS_PORT)
    service    ``parley run``: adapters and/or workers, graceful SIGTERM shutdown
    stack      builds all of the above for a runtime from Settings

How a queued turn flows::

    adapter --dispatch(turn, route)--> dedupe (SET NX) + bound check --> RPUSH conversation inbox
                                                                     --> XADD signal to the stream
    worker  <--XREADGROUP / XAUTOCLAIM-- signal --> lock the conversation (lease, renewed)
            --> while inbox not empty: LINDEX head -> engine.reply -> Delivery.deliver
                --> final memory write checks the lease and pops the head in one script
            --> unlock, re-check the inbox, XACK

Order within a conversation comes from the inbox (one list, drained by one lock holder at a time); the
stream only says "this conversation has work", so an extra or lost signal cannot reorder or drop a turn.
"""
