"""nexus-schedweb: the web dashboard and Prometheus metrics (optional extra ``web``).

A separate process and just another client of the control socket: every page is
built from :class:`nexus_schedd.client.Client` calls, live updates come from
Watch, and nothing here reaches into the daemon's state or store.
"""

from __future__ import annotations
