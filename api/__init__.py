"""FastAPI application, routes, command line and the embedded runtime."""
