"""A process that serves questions runs BLAS on one thread (set once, when its knowledge base starts).

A question's embedding and the vector search are matrix products with a handful of rows (or one vector),
bound by reading the weights and the index from memory, not by arithmetic. A second OpenBLAS thread then
only adds hand-offs and spinning, and on a busy machine it waits for a core. Measured on this 2-core machine
at a load average of 8-9 (README "Knowledge base"): a question's forward pass p50 158 / p95 1,464 ms on
OpenBLAS's default two threads, 72 / 99 ms on one; the vector search over 10,000 chunks 40 / 156 ms against
5 / 12 ms. On a quiet machine two threads search 10,000 chunks about 2 ms faster: a small price.

Set once, not around each call: BLAS has one thread setting per process, and switching it back and forth from
a worker thread cost more than it saved (p50 452 ms a question, measured). Ingest (``parley kb ingest``, its
own process) keeps the default: its batches are large products that do use a second core.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_done = False


def serve_on_one_thread() -> None:
    global _done
    with _lock:
        if _done:
            return
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")  # for the life of the process: not restored
        _done = True
