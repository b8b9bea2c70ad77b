# The MLflow tracking server, at the client's version (pyproject's mlflow), with the PostgreSQL
# driver installed at build time (not at every container start). Runs as an unprivileged user.
FROM python:3.11-slim
ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir "mlflow==${MLFLOW_VERSION}" psycopg2-binary \
    && useradd --create-home --uid 1000 mlflow \
    && mkdir /mlartifacts && chown mlflow /mlartifacts
USER mlflow
EXPOSE 5000
