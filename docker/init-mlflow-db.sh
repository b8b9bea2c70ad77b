#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialised: a database for MLflow beside the study's.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"${MLFLOW_DB:-mlflow}\""
