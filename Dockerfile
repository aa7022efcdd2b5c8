# One image: the API or a worker, chosen by the command.
#   docker run robustdx robustdx serve --host 0.0.0.0
#   docker run --gpus all robustdx robustdx worker
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ROBUSTDX_DATA_DIR=/data

RUN apt-get update && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/robustdx
COPY pyproject.toml README.md alembic.ini ./
COPY requirements/service.lock ./requirements/
COPY app ./app
COPY workers ./workers
COPY models ./models
RUN pip install -c requirements/service.lock .

RUN useradd --create-home --uid 10001 robustdx && mkdir -p /data && chown robustdx /data
USER robustdx
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD curl -fsS http://127.0.0.1:8000/health/live || exit 1
CMD ["robustdx", "serve", "--host", "0.0.0.0", "--port", "8000"]
