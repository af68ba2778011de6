"""Hand-off to queues (SPEC section 14): the ``amqp``, ``redis``, ``nats`` and ``celery`` handlers.

The scheduler decides *when*; an existing broker and its workers decide *how*.
Each handler hands a due job to its broker at least once: in ``publish`` mode the
attempt succeeds once the broker has accepted the message, in ``request`` mode
once the worker's reply (a JobResult as JSON) says so. The shared parts live in
:mod:`.envelope` (payload rules, the message body, replies) and :mod:`.link`
(one connection per handler, reopened with backoff); one module per broker.

The broker clients are the optional extra ``queues``
(``pip install 'nexus-schedd[queues]'``); a broker module imports its client only
when its handler is built, so a missing extra is a clear :class:`ConfigError`.
"""
