# optuna-dashboard at a pinned version (the one the project checks against), with the
# PostgreSQL driver, as an unprivileged user.
FROM python:3.11-slim
ARG DASHBOARD_VERSION=0.21.0
RUN pip install --no-cache-dir "optuna-dashboard==${DASHBOARD_VERSION}" psycopg2-binary \
    && useradd --create-home --uid 1000 dashboard
COPY serve_dashboard.py /usr/local/bin/serve_dashboard.py
USER dashboard
EXPOSE 8080
