"""`bcos-clip serve`: the explanation explorer (``server``), its JSON API, engine, cache, request
limits, rendering and the static page."""
