"""RabbitMQ consumers of project and permission events (the original's exchanges, queues, messages).

Roles are stored as given, as the original did (any 32-bit integer; the API's 1 to 3 is not
imposed on events): 3 and above act as Moderator, 0 and below grant nothing.

Differences from the original, on purpose:
- Exchanges and queues are declared (durable) when missing instead of being required. A broker
  user without configure permission (ACCESS_REFUSED) uses what exists, looked up passively: the
  events' queues must exist then (else the consumers wait and /health says why).
  Without the delay queues, a message failing for a passing reason is held for the delay, then
  requeued (the queue waits meanwhile); without the dead-letter queue, a message that cannot be
  applied is logged in full and dropped. Both said once at connect.
- One bad authorization in a project event does not drop the event: the project and the other
  members are applied, the bad item is logged and dead-lettered alone, as a project event holding
  only that item (fixed, it can be published again).
- A failed message never holds the queue. `is_temporary` sorts each failure:
  - permanent, it would fail again the same way (not JSON, wrong types, unknown action, a role
    beyond 32 bits, or values the database refuses: a NUL byte, a constraint): on the first
    failure the message is published to the dead-letter exchange, then acked. It stays in
    `<queue>.dead`, the reason in its `x-death-reason` header. The original redelivered such
    messages forever.
  - temporary (database unreachable, disconnected, locked, starting up, a timeout; and errors not
    recognised): a copy with `x-codeactions-retries` incremented goes to the delay queue
    `<queue>.retry.<delay>s`, then the message is acked and the next one handled at once. The delay
    queue has no consumer: its `x-message-ttl` expires the copy and its dead-letter arguments send
    it back to `<queue>` through the default exchange. The delay is `rabbitmq.retry_seconds`,
    doubled each retry, at most 60 s; one delay queue per delay, as the broker expires messages
    only at a queue's head. After `rabbitmq.max_retries` retries the message is dead-lettered.
    The defaults (20 retries) ride out about 16 minutes of database outage.
  The retry count travels in the message header, so a restart neither resets nor loses it.
- Publishing dead letters and retries explicitly (instead of `x-dead-letter-exchange` on the
  queue) keeps queues created by the original usable: a queue cannot be re-declared with different
  arguments.
- Acks are manual, one message at a time, and only after the database commit or the broker's
  confirm of the dead-letter or retry copy, so a lost connection or a crash redelivers instead of
  losing; handlers are idempotent. A message retried later is applied after the events that came
  behind it: order holds among the messages that succeed on their first attempt.
"""

from codeactions.projects.consumers.connection import CONSUMERS, EventConsumers, start_consumers
from codeactions.projects.consumers.failures import (
    MAX_RETRY_DELAY,
    REASON_HEADER,
    RETRIES_HEADER,
    describe,
    is_temporary,
    retry_count,
    retry_delay_ms,
)
from codeactions.projects.consumers.handlers import (
    Apply,
    SetAside,
    apply_permission_changed,
    apply_project_created,
)
from codeactions.projects.consumers.messages import (
    Authorization,
    InvalidMessage,
    PermissionChanged,
    ProjectCreated,
    parse,
)
from codeactions.projects.consumers.topology import (
    ConsumerSpec,
    Topology,
    TopologyMissing,
    consumer_specs,
)

__all__ = [
    "CONSUMERS",
    "MAX_RETRY_DELAY",
    "REASON_HEADER",
    "RETRIES_HEADER",
    "Apply",
    "Authorization",
    "ConsumerSpec",
    "EventConsumers",
    "InvalidMessage",
    "PermissionChanged",
    "ProjectCreated",
    "SetAside",
    "Topology",
    "TopologyMissing",
    "apply_permission_changed",
    "apply_project_created",
    "consumer_specs",
    "describe",
    "is_temporary",
    "parse",
    "retry_count",
    "retry_delay_ms",
    "start_consumers",
]
