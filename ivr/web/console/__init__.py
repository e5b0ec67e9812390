"""The operator console at /console: one module per page group.

`base` (blueprint, access control, arguments, `audited`), `formatting` (words, times,
timelines), `auth` (sign-in), `dashboard`, `calls` (log, live, detail, recordings),
`tickets`, `acd` (presence, the live queue, callbacks), `roster` (operators and the audit
trail, for admins). Caller numbers show as their last four digits; an admin may reveal
one, and that, viewing a call, changing a ticket and changing the roster land in the audit
trail.
"""

from ivr.web.console import acd, auth, calls, dashboard, roster, tickets
from ivr.web.console.base import bp

__all__ = ["acd", "auth", "bp", "calls", "dashboard", "roster", "tickets"]
