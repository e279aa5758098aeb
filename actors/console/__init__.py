"""The web console: runs, one run's timeline, approvals, queues and schedules, in a browser.

A client of the subject contract like any other program (`timestep.client.Client`): it lists
runs with `<prefix>.runs.list`, follows them on the events stream (relayed to the page as
server-sent events), and acts with the same requests as the command line. Served by
`timestep up --console` on the process's HTTP server and by `timestep console` on its own.

>>> console = Console(client)            # or Console(login=Login(url, settings)) for per-user access
>>> console.add_routes(app)              # an aiohttp Application
"""

from actors.console.access import Login
from actors.console.app import Console, serve

__all__ = ["Console", "Login", "serve"]
