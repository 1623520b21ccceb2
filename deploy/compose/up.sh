#!/bin/sh
# Bring up the compose stack (deploy/README.md):
#   deploy/compose/up.sh                              Kafka, Redis, 2 workers, Prometheus, Grafana
#   COMPOSE_PROFILES=simulator deploy/compose/up.sh   … and simulated members streaming in
# On first use it writes deploy/compose/.env (mode 600, git-ignored): random passwords for
# Redis and Grafana's admin, and MODEL_REGISTRY, the model registry the workers mount
# (default: the one `make run` leaves in ~/.memberpulse/models/registry).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
env_file="$here/.env"

secret() { od -An -tx1 -N18 /dev/urandom | tr -d ' \n'; }

if [ ! -f "$env_file" ]; then
    (
        umask 077
        {
            echo "REDIS_PASSWORD=$(secret)"
            echo "GRAFANA_ADMIN_PASSWORD=$(secret)"
            echo "MODEL_REGISTRY=${MODEL_REGISTRY:-$HOME/.memberpulse/models/registry}"
        } > "$env_file"
    )
    echo "wrote $env_file (Redis and Grafana admin passwords, model registry path)"
fi

registry=$(sed -n 's/^MODEL_REGISTRY=//p' "$env_file")
if [ ! -e "$registry/current" ]; then
    echo "no promoted model in $registry: run \`make run\` once (it trains and promotes the" >&2
    echo "default model there), or \`memberpulse model add MODEL.onnx --promote\` with" >&2
    echo "MEMBERPULSE_MODEL_REGISTRY=$registry, or set MODEL_REGISTRY in $env_file" >&2
    exit 1
fi

exec docker compose --project-directory "$here" -f "$here/compose.yaml" up -d --build "$@"
