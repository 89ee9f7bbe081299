# The project's image: producer, pipeline submitter and serving (docker-compose.yml).
#
#   docker build -t market-data-pipeline:0.1.0 .
#
# python:3.11-slim is the Python of the project and of the Beam worker image
# (apache/beam_python3.11_sdk). Dependencies come first, from the pinned
# requirements.txt, so editing the code reuses the cached dependency layer.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Every pinned package ships a manylinux wheel for CPython 3.11: no compiler.
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app
WORKDIR /app
# Owned by `app`: the submitter builds the project's sdist here
# (`--setup_file=/app/setup.py`, which writes its egg-info next to setup.py)
# for Beam to stage to the Python workers.
COPY --chown=app:app . .
USER app

EXPOSE 8000
# Each compose service gives its own command; alone, the image serves.
CMD ["gunicorn", "--worker-class", "gthread", "--workers", "1", "--threads", "1100", \
     "--worker-connections", "2200", "--bind", "0.0.0.0:8000", "--graceful-timeout", "10", \
     "serving:create_app()"]
