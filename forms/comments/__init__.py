"""Comments on records, with @mentions (issue #8).

* ``tables``   -- ``loom_comments`` (migration ``0005_comments``)
* ``service``  -- ``Comments``: post / list / delete, access-checked and audited
* ``mentions`` -- parsing ``@name``, who may be mentioned, the @ picker
* ``notify``   -- inbox entries (``loom_tasks`` kind ``mention``) and outbox messages
* ``timeline`` -- history and comments merged, bounded

Registered by ``forms.setup`` as ``runtime.services['comments']``.
"""
from .service import Comments  # noqa: F401
from .timeline import record_timeline  # noqa: F401
