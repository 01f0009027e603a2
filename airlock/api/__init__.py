"""The HTTP API: a FastAPI app under uvicorn (airlock/api/app.py)."""
