"""One router per API area: typed bodies and a few lines per route over its service (``serve_app/services``).
Errors leave through the handlers in ``serve_app/errors.py``; ``serve_app/api.py`` includes every router."""
