"""In-process API tests (ASGITransport) and loopback uvicorn watch tests."""
