"""optuna-dashboard on the study in $STUDY_STORAGE: the URL (with its password) stays in this
process's environment, never on a command line where `ps` shows it."""

import os

import optuna_dashboard

if __name__ == "__main__":
    optuna_dashboard.run_server(os.environ["STUDY_STORAGE"], host="0.0.0.0", port=8080)
